using System.Globalization;
using System.Text;

namespace QLoraNet.Models.Tokenization;

/// <summary>
/// Unicode Normalization Form C (Unicode Standard Annex #15): canonical decomposition, canonical ordering of
/// combining marks, then canonical composition. Tokenizers whose tokenizer.json names an NFC normalizer (Qwen2) run
/// their input through it, as Hugging Face tokenizers does. .NET's <c>string.Normalize</c> cannot be used: in
/// globalization-invariant mode (how QLoraNet runs) it returns its input unchanged. The character data (decompositions,
/// combining classes, composition exclusions) is <c>UnicodeNfc.data</c>, written by scripts/unicode/make_nfc_data.py;
/// Hangul syllables are composed and decomposed arithmetically (UAX #15 / Unicode chapter 3.12).
/// Immutable after construction; one shared instance.
/// </summary>
public sealed class UnicodeNfc
{
    const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7, LCount = 19, VCount = 21, TCount = 28;
    const int NCount = VCount * TCount, SCount = LCount * NCount;

    readonly Dictionary<int, int[]> decompositions = [];
    readonly Dictionary<long, int> compositions = [];
    readonly Dictionary<int, byte> combiningClasses = [];

    /// <summary>The table shipped in this assembly.</summary>
    public static UnicodeNfc Shared { get; } = Load();

    UnicodeNfc() { }

    static UnicodeNfc Load()
    {
        using var stream = typeof(UnicodeNfc).Assembly.GetManifestResourceStream("QLoraNet.Models.Tokenization.UnicodeNfc.data")
            ?? throw new InvalidOperationException("UnicodeNfc.data is not embedded in QLoraNet.Models");
        using var reader = new StreamReader(stream, Encoding.ASCII);
        var nfc = new UnicodeNfc();
        var excluded = new HashSet<int>();
        string? line;
        while ((line = reader.ReadLine()) != null)
        {
            if (line.Length == 0 || line[0] == '#') continue;
            var f = line.Split(' ');
            switch (f[0])
            {
                case "D": nfc.decompositions[Hex(f[1])] = f[2..].Select(Hex).ToArray(); break;
                case "X": excluded.Add(Hex(f[1])); break;
                case "C":
                    for (int cp = Hex(f[1]), last = Hex(f[2]); cp <= last; cp++) nfc.combiningClasses[cp] = byte.Parse(f[3], CultureInfo.InvariantCulture);
                    break;
            }
        }
        // Primary composites: two-code-point decompositions not excluded (singletons never recompose).
        foreach (var (cp, parts) in nfc.decompositions)
            if (parts.Length == 2 && !excluded.Contains(cp)) nfc.compositions[Pair(parts[0], parts[1])] = cp;
        return nfc;

        static int Hex(string s) => int.Parse(s, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
    }

    /// <summary>The NFC form of <paramref name="text"/>; the same string when it has nothing to change.</summary>
    public string Normalize(string text) => Normalize(text, out _);

    /// <summary>
    /// The NFC form of <paramref name="text"/>, with <paramref name="sourceIndex"/>[i] the index in
    /// <paramref name="text"/> of the character that output character i comes from (null when nothing changed), so
    /// that offsets into the normalized text map back to the input.
    /// </summary>
    public string Normalize(string text, out int[]? sourceIndex)
    {
        sourceIndex = null;
        // Below U+0300 every character is its own NFC form and a starter, so most text takes this exit.
        if (!text.AsSpan().ContainsAnyExceptInRange('\0', '\u02FF')) return text;

        var points = new List<(int Cp, int Source)>(text.Length);
        for (int i = 0; i < text.Length; i += char.IsSurrogatePair(text, i) ? 2 : 1)
            Decompose(char.IsSurrogatePair(text, i) ? char.ConvertToUtf32(text, i) : char.IsSurrogate(text[i]) ? 0xFFFD : text[i], i, points);   // a lone surrogate is U+FFFD, as in UTF-8
        Reorder(points);
        Compose(points);

        var sb = new StringBuilder(text.Length);
        var map = new List<int>(text.Length);
        foreach (var (cp, source) in points)
        {
            int before = sb.Length;
            sb.Append(char.ConvertFromUtf32(cp));
            for (int k = before; k < sb.Length; k++) map.Add(source);
        }
        string result = sb.ToString();
        if (result == text) return text;
        sourceIndex = map.ToArray();
        return result;
    }

    void Decompose(int cp, int source, List<(int, int)> output)
    {
        int s = cp - SBase;
        if (s is >= 0 and < SCount)
        {
            output.Add((LBase + s / NCount, source));
            output.Add((VBase + s % NCount / TCount, source));
            if (s % TCount != 0) output.Add((TBase + s % TCount, source));
            return;
        }
        if (decompositions.TryGetValue(cp, out var parts))
            foreach (int p in parts) Decompose(p, source, output);
        else
            output.Add((cp, source));
    }

    byte Ccc(int cp) => combiningClasses.GetValueOrDefault(cp);

    /// <summary>Canonical ordering: a stable sort of each run of non-starters by combining class.</summary>
    void Reorder(List<(int Cp, int Source)> points)
    {
        for (int i = 1; i < points.Count; i++)
        {
            byte c = Ccc(points[i].Cp);
            if (c == 0) continue;
            for (int j = i; j > 0 && Ccc(points[j - 1].Cp) > c; j--)
                (points[j - 1], points[j]) = (points[j], points[j - 1]);
        }
    }

    /// <summary>Canonical composition: each character joins the last starter unless blocked by a mark of equal or higher class.</summary>
    void Compose(List<(int Cp, int Source)> points)
    {
        if (points.Count == 0) return;
        int starter = -1;        // index of the last starter in the output
        int lastClass = -1;      // combining class of the last character appended after it
        int write = 0;
        for (int read = 0; read < points.Count; read++)
        {
            var (cp, source) = points[read];
            byte cc = Ccc(cp);
            if (starter >= 0 && (lastClass < cc || lastClass == 0 && write - 1 == starter) && TryCompose(points[starter].Cp, cp, out int composed))
            {
                points[starter] = (composed, points[starter].Source);
                continue;
            }
            if (cc == 0)
            {
                starter = write;
                lastClass = 0;
            }
            else lastClass = cc;
            points[write++] = (cp, source);
        }
        points.RemoveRange(write, points.Count - write);
    }

    bool TryCompose(int a, int b, out int composed)
    {
        int l = a - LBase, v = b - VBase;
        if (l is >= 0 and < LCount && v is >= 0 and < VCount)
        {
            composed = SBase + (l * VCount + v) * TCount;
            return true;
        }
        int s = a - SBase, t = b - TBase;
        if (s is >= 0 and < SCount && s % TCount == 0 && t is > 0 and < TCount)
        {
            composed = a + t;
            return true;
        }
        return compositions.TryGetValue(Pair(a, b), out composed);
    }

    static long Pair(int a, int b) => (long)a << 21 | (uint)b;
}
