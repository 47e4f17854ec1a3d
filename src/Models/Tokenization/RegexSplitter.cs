using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace QLoraNet.Models.Tokenization;

/// <summary>
/// tokenizers' Split pre-tokenizer with behavior Isolated, for one or more regexes applied in turn: every match
/// becomes a piece of its own and so does the text between matches. The regexes are written for Oniguruma, which
/// sees code points; .NET's Regex sees UTF-16 units, so a letter or digit outside the BMP (CJK Extension B, math
/// alphanumerics) would not match <c>\p{L}</c>/<c>\p{N}</c>. The matching therefore runs on a stand-in string with one
/// character per code point: characters of the BMP as they are, others as a BMP character of the same class
/// (letter 'ª', number '²', anything else '¦'); piece boundaries map back to the text.
/// </summary>
public sealed class RegexSplitter
{
    readonly Regex[] regexes;
    readonly string source;

    /// <summary>The shipped pre-tokenizer patterns are a few hundred characters; a longer one is not a tokenizer's.</summary>
    public const int MaxPatternChars = 4096;

    /// <summary>
    /// One match of a shipped pattern takes microseconds. The patterns come from a file, and a backtracking regex
    /// can take exponential time on a crafted one ("(a+)+b"): a match running this long ends the tokenization with an
    /// error naming the file instead of hanging (issue 11). Far above any real match even on a slow machine.
    /// </summary>
    static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(2);

    public RegexSplitter(IReadOnlyList<string> patterns, string source)
    {
        this.source = source;
        regexes = patterns.Select(p =>
        {
            if (p.Length > MaxPatternChars)
                throw new InvalidDataException($"{source}: Split pattern of {p.Length} characters is longer than {MaxPatternChars}; not a tokenizer's pre-tokenizer");
            try { return new Regex(p, RegexOptions.CultureInvariant | RegexOptions.Compiled, MatchTimeout); }
            catch (ArgumentException e) { throw new InvalidDataException($"{source}: Split pattern {QLoraNet.Formats.SafeText.Quote(p, 80)} is not a regex .NET can run ({QLoraNet.Formats.SafeText.Clip(e.Message, 200)})"); }
        }).ToArray();
    }

    /// <summary>The pieces (start, length) of <paramref name="text"/>, in order, covering it.</summary>
    public List<(int Start, int Length)> Split(string text)
    {
        try
        {
            return SplitUnbounded(text);
        }
        catch (RegexMatchTimeoutException e)
        {
            throw new InvalidDataException($"{source}: Split pattern {QLoraNet.Formats.SafeText.Quote(e.Pattern, 80)} ran past {MatchTimeout.TotalSeconds:0} s on one match (catastrophic backtracking); the tokenizer.json is damaged or not one a model ships");
        }
    }

    List<(int Start, int Length)> SplitUnbounded(string text)
    {
        var (standIn, textIndex) = StandIn(text);
        var pieces = new List<(int Start, int Length)> { (0, standIn.Length) };
        foreach (var regex in regexes)
        {
            var next = new List<(int, int)>(pieces.Count * 2);
            foreach (var (start, length) in pieces)
            {
                int at = start, end = start + length;
                for (var m = regex.Match(standIn, start, length); m.Success; m = m.NextMatch())
                {
                    if (m.Length == 0) continue;
                    if (m.Index > at) next.Add((at, m.Index - at));
                    next.Add((m.Index, m.Length));
                    at = m.Index + m.Length;
                }
                if (end > at) next.Add((at, end - at));
            }
            pieces = next;
        }
        if (textIndex == null) return pieces;
        return pieces.Select(p => (textIndex[p.Start], textIndex[p.Start + p.Length] - textIndex[p.Start])).ToList();
    }

    /// <summary>One character per code point; null map when the text has no surrogates (then it is its own stand-in).</summary>
    static (string StandIn, int[]? TextIndex) StandIn(string text)
    {
        if (!text.AsSpan().ContainsAnyInRange('\uD800', '\uDFFF')) return (text, null);
        var sb = new StringBuilder(text.Length);
        var index = new List<int>(text.Length + 1);
        for (int i = 0; i < text.Length;)
        {
            index.Add(i);
            if (char.IsSurrogatePair(text, i))
            {
                var category = CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(text, i));
                sb.Append(category switch
                {
                    <= UnicodeCategory.OtherLetter => 'ª',
                    UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => '²',
                    _ => '¦',
                });
                i += 2;
            }
            else sb.Append(text[i++]);
        }
        index.Add(text.Length);
        return (sb.ToString(), index.ToArray());
    }
}
