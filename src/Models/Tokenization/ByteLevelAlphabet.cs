namespace QLoraNet.Models.Tokenization;

/// <summary>
/// GPT-2's reversible byte-to-character map (openai/gpt-2 encoder.py <c>bytes_to_unicode</c>, used by every
/// byte-level BPE): the printable bytes '!'..'~', '¡'..'¬', '®'..'ÿ' stand for themselves and the other 68 bytes
/// for U+0100 onward in byte order, so a space is 'Ġ' (U+0120) and a newline 'Ċ' (U+010A). A byte-level vocabulary
/// spells every token in these characters, one per UTF-8 byte.
/// </summary>
public static class ByteLevelAlphabet
{
    static readonly char[] ByteToChar = Build();
    static readonly Dictionary<char, byte> CharToByte = Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    static char[] Build()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
            map[b] = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF ? (char)b : (char)next++;
        return map;
    }

    /// <summary>The byte-level spelling of <paramref name="bytes"/>.</summary>
    public static string Spell(ReadOnlySpan<byte> bytes)
    {
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }

    /// <summary>Appends the bytes a byte-level token stands for; false when it holds a character outside the alphabet.</summary>
    public static bool TryAppendBytes(string token, List<byte> output)
    {
        foreach (char c in token)
        {
            if (!CharToByte.TryGetValue(c, out byte b)) return false;
            output.Add(b);
        }
        return true;
    }
}
