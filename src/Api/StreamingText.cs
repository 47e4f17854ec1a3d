using QLoraNet.Models;

namespace QLoraNet;

/// <summary>
/// Turns generated token ids into text deltas as they come: the whole output is decoded again after each token and the
/// new part is released, except (a) a trailing U+FFFD, an incomplete UTF-8 sequence whose remaining bytes are in the next
/// byte-fallback tokens, and (b) a trailing part that could be the start of a stop sequence. A stop sequence ends the
/// output before it.
/// </summary>
sealed class StreamingText(ITextTokenizer tokenizer, IReadOnlyList<string> stopSequences)
{
    readonly List<int> _ids = [];
    readonly string[] _stops = stopSequences.Where(s => s.Length > 0).ToArray();
    string _text = "";
    int _released;

    /// <summary>Everything released so far, which is the output.</summary>
    public string Released => _text[.._released];

    /// <summary>The text a new token releases (maybe empty) and whether a stop sequence ended the output.</summary>
    public (string Delta, bool Stopped) Add(int id)
    {
        _ids.Add(id);
        _text = tokenizer.Decode(_ids);
        if (_released > _text.Length) _released = _text.Length;
        int from = Math.Max(0, _released - _stops.Select(s => s.Length).DefaultIfEmpty(0).Max());
        int cut = _stops.Select(s => _text.IndexOf(s, from, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(-1).Min();
        if (cut >= 0)
        {
            string last = cut > _released ? _text[_released..cut] : "";
            _released = Math.Max(_released, cut);
            _text = _text[.._released];
            return (last, true);
        }
        int safe = _text.Length;
        while (safe > _released && _text[safe - 1] == '\uFFFD') safe--;
        safe -= PartialStop(_text.AsSpan(0, safe));
        if (safe <= _released) return ("", false);
        string delta = _text[_released..safe];
        _released = safe;
        return (delta, false);
    }

    /// <summary>What is still held back once generation ends (an incomplete character or a stop sequence's start that never completed).</summary>
    public string Flush()
    {
        string rest = _text[_released..];
        _released = _text.Length;
        return rest;
    }

    /// <summary>The length of the longest end of <paramref name="text"/> that is a proper start of a stop sequence.</summary>
    int PartialStop(ReadOnlySpan<char> text)
    {
        int best = 0;
        foreach (var stop in _stops)
            for (int n = Math.Min(stop.Length - 1, text.Length); n > best; n--)
                if (text[^n..].SequenceEqual(stop.AsSpan(0, n))) { best = n; break; }
        return best;
    }
}
