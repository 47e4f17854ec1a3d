using System.Globalization;
using System.Text;

namespace QLoraNet.Formats;

/// <summary>
/// Text from an input file made safe to print in a one-line message: control characters, invisible and
/// unassigned code points and lone surrogates become escapes (<c>\n</c>, <c>\x1b</c>, <c>\u200b</c>), so a file
/// cannot move the cursor, clear the screen or forge a line of output, and long values are cut to a few dozen
/// characters with the total length noted.
/// </summary>
public static class SafeText
{
    /// <summary>Escaped and clipped to <paramref name="maxChars"/> characters of input.</summary>
    public static string Clip(string? text, int maxChars = 100) => Escape(text, maxChars, escapeBackslash: true);

    /// <summary>
    /// For a whole message that already quotes its values with <see cref="Clip"/>: escapes only what must never
    /// reach a terminal (control and invisible characters), leaving backslashes as they are, and caps the length.
    /// </summary>
    public static string Line(string text, int maxChars) => Escape(text, maxChars, escapeBackslash: false);

    static string Escape(string? text, int maxChars, bool escapeBackslash)
    {
        if (text is null) return "null";
        var sb = new StringBuilder(Math.Min(text.Length, maxChars) + 8);
        int shown = 0;
        for (int i = 0; i < text.Length && shown < maxChars; i++, shown++)
        {
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                string pair = text.Substring(i, 2);
                if (Printable(CharUnicodeInfo.GetUnicodeCategory(pair, 0))) sb.Append(pair);
                else sb.Append($"\\U{char.ConvertToUtf32(c, text[i + 1]):x8}");
                i++;
                continue;
            }
            switch (c)
            {
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\\': sb.Append(escapeBackslash ? "\\\\" : "\\"); break;
                default:
                    if (c < 0x80 ? c >= 0x20 && c != 0x7f : !char.IsSurrogate(c) && Printable(CharUnicodeInfo.GetUnicodeCategory(c)))
                        sb.Append(c);
                    else if (c <= 0xff) sb.Append($"\\x{(int)c:x2}");
                    else sb.Append($"\\u{(int)c:x4}");
                    break;
            }
        }
        if (text.Length > maxChars && shown >= maxChars) sb.Append($"... ({text.Length} characters)");
        return sb.ToString();
    }

    /// <summary><see cref="Clip"/> in single quotes: how a message shows a value it read.</summary>
    public static string Quote(string? text, int maxChars = 100) => text is null ? "null" : $"'{Clip(text, maxChars)}'";

    static bool Printable(UnicodeCategory category) => category is not (UnicodeCategory.Control or UnicodeCategory.Format
        or UnicodeCategory.OtherNotAssigned or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse
        or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator);
}
