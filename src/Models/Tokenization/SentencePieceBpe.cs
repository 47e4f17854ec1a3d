using System.Text;
using QLoraNet.Formats;

namespace QLoraNet.Models.Tokenization;

/// <summary>
/// The BPE that transformers 5.17 rebuilds from a SentencePiece tokenizer.model (tokenizers' BPE with byte fallback
/// and fused unknowns): the vocabulary is every piece by id, and the merges are, for every piece, each split of it
/// into two pieces of the vocabulary, ranked by the merged piece's id, then by the left half's length
/// (transformers' SentencePieceExtractor.extract calls generate_merges(vocab) without scores, which sorts by
/// (id, len(left), len(right))). Not by score: Llama 2's runs of "▁" ("▁▁" = 259, ...) score -1e9 but rank by their
/// low ids, so "Answer:  yes" is "▁▁" + "yes" in transformers, not "▁" + "▁yes" (lm-evaluation-harness's reference
/// pairs, tests/fixtures/eval/loglik_reference.json, show it). Encoding starts from one symbol per character (a character
/// outside the vocabulary becomes its UTF-8 bytes as &lt;0xXX&gt; pieces, else the unknown piece) and repeatedly
/// merges the adjacent pair of lowest rank, the leftmost among equals (tokenizers' Word::merge_all).
/// Microsoft.ML.Tokenizers' LlamaTokenizer is not used for this: among equal-score merges at different positions it
/// merges the rightmost first ("..." -> ".", ".."), where SentencePiece and tokenizers take the leftmost ("..", ".").
/// </summary>
public sealed class SentencePieceBpe
{
    readonly Dictionary<string, int> vocab = new(StringComparer.Ordinal);
    readonly Dictionary<long, (int Rank, int Merged)> merges = [];
    readonly int[] byteIds = new int[256];
    readonly int unkId;

    public SentencePieceBpe(SentencePieceModel model)
    {
        var pieces = model.Pieces;
        for (int id = 0; id < pieces.Count; id++) vocab.TryAdd(pieces[id].Text, id);
        unkId = model.UnkId;
        for (int b = 0; b < 256; b++) byteIds[b] = vocab.GetValueOrDefault($"<0x{b:X2}>", -1);

        // Pieces in id order, each one's splits by the left half's length: the rank order directly.
        int rank = 0;
        for (int id = 0; id < pieces.Count; id++)
        {
            string text = pieces[id].Text;
            if (vocab[text] != id) continue;                 // a duplicate piece: its first id wins, as in the dict
            for (int k = 1; k < text.Length; k++)
                if (vocab.TryGetValue(text[..k], out int l) && vocab.TryGetValue(text[k..], out int r))
                    merges.TryAdd(Key(l, r), (rank++, id));
        }
    }

    /// <summary>The id of a piece; null when the vocabulary has no such piece.</summary>
    public int? IdOf(string piece) => vocab.TryGetValue(piece, out int id) ? id : null;

    /// <summary>Tokens of <paramref name="text"/> (already in "▁" spelling) with the index of each one's first character.</summary>
    public void Encode(string text, List<int> ids, List<int> starts)
    {
        // Initial symbols: one per character (code point), or its bytes, or the unknown piece (consecutive ones fused).
        var sym = new List<(int Id, int Start, int Prev, int Next)>();
        for (int i = 0; i < text.Length;)
        {
            int n = char.IsSurrogatePair(text, i) ? 2 : 1;
            if (vocab.TryGetValue(text.Substring(i, n), out int id)) Add(id, i);
            else
            {
                byte[] bytes = Encoding.UTF8.GetBytes(text.Substring(i, n));
                if (bytes.All(b => byteIds[b] >= 0)) foreach (byte b in bytes) Add(byteIds[b], i);
                else if (sym.Count == 0 || sym[^1].Id != unkId) Add(unkId, i);
            }
            i += n;
        }

        var queue = new PriorityQueue<(int Pos, int Merged), (int Rank, int Pos)>();
        for (int i = 0; i + 1 < sym.Count; i++) Push(i);
        while (queue.TryDequeue(out var top, out _))
        {
            var left = sym[top.Pos];
            if (left.Id < 0 || left.Next < 0) continue;                          // merged away, or now last
            var right = sym[left.Next];
            if (!merges.TryGetValue(Key(left.Id, right.Id), out var m) || m.Merged != top.Merged) continue;   // stale pair
            sym[top.Pos] = (m.Merged, left.Start, left.Prev, right.Next);
            sym[left.Next] = (-1, right.Start, -1, -1);
            if (right.Next >= 0) sym[right.Next] = sym[right.Next] with { Prev = top.Pos };
            if (left.Prev >= 0) Push(left.Prev);
            Push(top.Pos);
        }
        for (int i = 0; i < sym.Count; i = sym[i].Next)
        {
            ids.Add(sym[i].Id);
            starts.Add(sym[i].Start);
            if (sym[i].Next < 0) break;
        }

        void Add(int id, int start)
        {
            if (sym.Count > 0) sym[^1] = sym[^1] with { Next = sym.Count };
            sym.Add((id, start, sym.Count - 1, -1));
        }

        void Push(int pos)
        {
            var s = sym[pos];
            if (s.Next >= 0 && merges.TryGetValue(Key(s.Id, sym[s.Next].Id), out var m)) queue.Enqueue((pos, m.Merged), (m.Rank, pos));
        }
    }

    static long Key(int left, int right) => (long)left << 32 | (uint)right;
}
