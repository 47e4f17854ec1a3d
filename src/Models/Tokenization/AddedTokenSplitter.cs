using QLoraNet.Formats;

namespace QLoraNet.Models.Tokenization;

/// <summary>
/// Finds the added tokens (special or not) in a text before it is normalized and pre-tokenized, as Hugging Face
/// tokenizers' AddedVocabulary does: scanning left to right, the longest token starting at the leftmost position
/// wins (Aho-Corasick leftmost-longest); a <c>single_word</c> token touching a word character is not a match (its
/// text stays ordinary text); <c>lstrip</c>/<c>rstrip</c> widen a match over the whitespace beside it.
/// The result is the text cut into pieces: added-token matches (with their id) and the ordinary text between them.
/// </summary>
public sealed class AddedTokenSplitter
{
    /// <summary>A piece of the text: ordinary text when <see cref="TokenId"/> is null.</summary>
    public readonly record struct Piece(int Start, int Length, int? TokenId);

    readonly Dictionary<char, AddedTokenSpec[]> byFirstChar;

    public AddedTokenSplitter(IEnumerable<AddedTokenSpec> tokens)
    {
        byFirstChar = tokens.Where(t => t.Content.Length > 0)
            .GroupBy(t => t.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ToArray());
    }

    public bool IsEmpty => byFirstChar.Count == 0;

    /// <summary>The pieces of <paramref name="text"/>[start, start + length), in order, covering it.</summary>
    public List<Piece> Split(string text, int start, int length)
    {
        var pieces = new List<Piece>();
        int end = start + length, emitted = start, i = start;
        while (i < end)
        {
            var match = LongestAt(text, i, end);
            if (match == null) { i++; continue; }
            int matchStart = i, matchEnd = i + match.Content.Length;
            if (match.SingleWord && (IsWordChar(text, matchStart - 1, start, end) || IsWordChar(text, matchEnd, start, end)))
            {
                i = matchEnd;                                  // discarded, but its text is consumed as ordinary text
                continue;
            }
            if (match.LStrip)
                while (matchStart > emitted && char.IsWhiteSpace(text[matchStart - 1])) matchStart--;
            if (match.RStrip)
                while (matchEnd < end && char.IsWhiteSpace(text[matchEnd])) matchEnd++;
            if (matchStart > emitted) pieces.Add(new Piece(emitted, matchStart - emitted, null));
            pieces.Add(new Piece(matchStart, matchEnd - matchStart, match.Id));
            emitted = i = matchEnd;
        }
        if (end > emitted) pieces.Add(new Piece(emitted, end - emitted, null));
        return pieces;
    }

    AddedTokenSpec? LongestAt(string text, int i, int end)
    {
        if (!byFirstChar.TryGetValue(text[i], out var candidates)) return null;
        foreach (var t in candidates)
            if (t.Content.Length <= end - i && string.CompareOrdinal(text, i, t.Content, 0, t.Content.Length) == 0) return t;
        return null;
    }

    static bool IsWordChar(string text, int index, int start, int end) =>
        index >= start && index < end && (char.IsLetterOrDigit(text[index]) || text[index] == '_');
}
