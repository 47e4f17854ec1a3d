using System.Text;

namespace QLoraNet.Tests.Fuzz;

/// <summary>
/// Seeded mutations of a valid input, the kinds that found issue 11's failures: bit flips, byte insertions and
/// deletions, truncation, splices and duplicated ranges (a JSON key twice), huge or negative numbers, deep
/// nesting, very long lines and "interesting" bytes (NUL, 0xFF, a lone UTF-8 continuation byte, ESC, quotes).
/// The same seed always gives the same bytes, so a failure is reproduced from its seed alone.
/// </summary>
public static class Mutator
{
    /// <summary>Outputs are capped here: long enough to pass every reader's line and nesting limits.</summary>
    public const int MaxBytes = 4 << 20;

    static readonly string[] Numbers =
        ["2147483647", "2147483648", "-1", "0", "-2147483648", "9223372036854775807", "18446744073709551615",
         "99999999999999999999999", "1e400", "-0", "NaN", "Infinity", "1.5", "4294967296"];

    static readonly byte[] Interesting = [0x00, 0xff, 0x80, 0xc0, (byte)'\n', (byte)'\r', (byte)'"', (byte)'\\', 0x1b, (byte)'{', (byte)'[', (byte)',', (byte)':'];

    public static byte[] Mutate(byte[] seed, int mutationSeed)
    {
        var rng = new Random(mutationSeed);
        var data = new List<byte>(seed);
        int rounds = 1 + rng.Next(rng.Next(4) == 0 ? 16 : 4);
        for (int r = 0; r < rounds; r++)
        {
            int at = data.Count == 0 ? 0 : rng.Next(data.Count + 1);
            switch (rng.Next(11))
            {
                case 0 when data.Count > 0:  // bit flip
                    int i = rng.Next(data.Count);
                    data[i] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1:  // insert random bytes
                    var bytes = new byte[1 + rng.Next(8)];
                    rng.NextBytes(bytes);
                    data.InsertRange(at, bytes);
                    break;
                case 2 when data.Count > 0:  // delete a range
                    int start = rng.Next(data.Count);
                    data.RemoveRange(start, Math.Min(data.Count - start, 1 + rng.Next(16)));
                    break;
                case 3:  // truncate
                    data.RemoveRange(at, data.Count - at);
                    break;
                case 4 when data.Count > 1:  // splice: copy a range elsewhere
                {
                    int from = rng.Next(data.Count), len = Math.Min(data.Count - from, 1 + rng.Next(64));
                    data.InsertRange(at, data.GetRange(from, len));
                    break;
                }
                case 5 when data.Count > 1:  // duplicate a range in place (a repeated key, a repeated entry)
                {
                    int from = rng.Next(data.Count), len = Math.Min(data.Count - from, 1 + rng.Next(256));
                    data.InsertRange(from + len, data.GetRange(from, len));
                    break;
                }
                case 6:  // a huge, negative or odd number, replacing a run of digits when there is one
                    ReplaceNumber(data, at, Encoding.ASCII.GetBytes(Numbers[rng.Next(Numbers.Length)]));
                    break;
                case 7:  // deep nesting
                {
                    int depth = rng.Next(3) == 0 ? 50_000 : 1 + rng.Next(200);
                    string open = rng.Next(3) switch { 0 => "[", 1 => "{\"a\":", _ => "- " };
                    data.InsertRange(at, Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat(open, depth))));
                    break;
                }
                case 8:  // a very long line
                    data.InsertRange(at, Enumerable.Repeat((byte)'a', rng.Next(3) == 0 ? 2_000_000 : rng.Next(70_000)));
                    break;
                case 9:  // an interesting byte
                    data.Insert(at, Interesting[rng.Next(Interesting.Length)]);
                    break;
                default:  // overwrite a byte with a random one
                    if (data.Count > 0) data[rng.Next(data.Count)] = (byte)rng.Next(256);
                    break;
            }
            if (data.Count > MaxBytes) data.RemoveRange(MaxBytes, data.Count - MaxBytes);
        }
        return data.ToArray();
    }

    static void ReplaceNumber(List<byte> data, int at, byte[] number)
    {
        int start = at;
        while (start < data.Count && !char.IsAsciiDigit((char)data[start])) start++;
        if (start >= data.Count || start - at > 64) { data.InsertRange(Math.Min(at, data.Count), number); return; }
        int end = start;
        while (end < data.Count && char.IsAsciiDigit((char)data[end])) end++;
        data.RemoveRange(start, end - start);
        data.InsertRange(start, number);
    }
}
