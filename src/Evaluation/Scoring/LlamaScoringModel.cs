using QLoraNet.Models;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Evaluation.Scoring;

/// <summary>
/// <see cref="IScoringModel"/> over a <see cref="LlamaForCausalLM"/> (the decoder of every family the model code
/// builds, in any base format, with or without LoRA: whatever <c>ModelBuilder</c> assembled) and its
/// <see cref="ITextTokenizer"/>. The only file of the evaluation engine that knows the model.
/// Encoding follows the harness's HFLM: the tokenizer's default special tokens (BOS for Llama 2/3, none for the
/// byte-level Qwen2), the prefix token for an empty context is BOS, else EOS (<c>prefix_token_id</c>), the longest
/// input is the family's max_position_embeddings, and generation stops at every EOS id of config.json and the
/// tokenizer.
/// Log-likelihoods: right-padded batch, causal attention (padding sits after every real token, so it changes nothing
/// a real position sees), one forward for hidden states, then the head only at the positions that predict
/// continuation tokens (cheap: a few rows of the vocabulary projection instead of all T), log-softmax in fp32.
/// </summary>
public sealed class LlamaScoringModel : IScoringModel
{
    readonly LlamaForCausalLM model;
    readonly ITextTokenizer tokenizer;

    public LlamaScoringModel(LlamaForCausalLM model, ITextTokenizer tokenizer)
    {
        this.model = model;
        this.tokenizer = tokenizer;
        MaxLength = model.Architecture.MaxPositions;
        EosIds = model.Architecture.Tokens.Eos.Append(tokenizer.EosId).Distinct().ToList();
    }

    public IReadOnlyList<int> Encode(string text) => tokenizer.Encode(text);
    public IReadOnlyList<int> EncodeWithoutSpecialTokens(string text) => tokenizer.Tokenize(text, addSpecialTokens: false).Ids;
    public string Decode(IReadOnlyList<int> ids) => tokenizer.Decode(ids);
    public int PrefixTokenId => tokenizer.BosId ?? tokenizer.EosId;
    public IReadOnlyList<int> EosIds { get; }
    public int MaxLength { get; }

    public IReadOnlyList<ContinuationScore> Score(IReadOnlyList<ScoringRow> rows)
    {
        if (rows.Count == 0) return [];
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        int t = rows.Max(r => r.Input.Count);
        var ids = new long[rows.Count * t]; // right padding: never attended to by a real position
        Array.Fill(ids, tokenizer.PadId);
        for (int b = 0; b < rows.Count; b++)
            for (int i = 0; i < rows[b].Input.Count; i++) ids[b * t + i] = rows[b].Input[i];
        var input = tensor(ids, [rows.Count, t], ScalarType.Int64, model.Device);             // (B, T)
        var hidden = model.Model.forward(input, null, null, null);                             // (B, T, hidden)

        // The positions that predict continuation tokens, row by row: (sum of continuation lengths, hidden).
        var picked = cat(rows.Select((r, b) => hidden[b].narrow(0, r.Input.Count - r.Continuation.Count, r.Continuation.Count)).ToArray(), 0);
        var logProbs = F.log_softmax(model.Logits(picked), -1);                               // (N, vocab) fp32
        var targets = tensor(rows.SelectMany(r => r.Continuation.Select(c => (long)c)).ToArray(), ScalarType.Int64, model.Device);
        var tokenLogProbs = logProbs.gather(1, targets.unsqueeze(1)).squeeze(1).to(ScalarType.Float64).cpu();   // (N)
        var greedy = logProbs.argmax(1).eq(targets).cpu();                                     // (N)

        var lp = tokenLogProbs.data<double>().ToArray();
        var hit = greedy.data<bool>().ToArray();
        var result = new ContinuationScore[rows.Count];
        int offset = 0;
        for (int b = 0; b < rows.Count; b++)
        {
            int n = rows[b].Continuation.Count;
            double sum = 0;
            bool all = true;
            for (int i = 0; i < n; i++)
            {
                sum += lp[offset + i];
                all &= hit[offset + i];
            }
            result[b] = new ContinuationScore(sum, all);
            offset += n;
        }
        return result;
    }

    public string GenerateUntil(IReadOnlyList<int> contextIds, IReadOnlyList<string> until, int maxNewTokens, IReadOnlyList<int> stopIds)
    {
        var generated = new List<int>();
        if (maxNewTokens <= 0 || contextIds.Count == 0) return "";
        using var noGrad = no_grad();
        using var cache = model.NewKvCache(batch: 1, capacity: contextIds.Count + maxNewTokens);
        long[] next = contextIds.Select(i => (long)i).ToArray();
        while (generated.Count < maxNewTokens)
        {
            using var scope = NewDisposeScope();
            var ids = tensor(next, [1, next.Length], ScalarType.Int64, model.Device);          // (1, T)
            var hidden = model.Model.forward(ids, null, null, cache);                          // (1, T, hidden)
            int token = (int)model.Logits(hidden[0, -1]).argmax().item<long>();                // greedy
            if (EosIds.Contains(token) || stopIds.Contains(token)) break;
            generated.Add(token);
            // Stop strings are text: a stop like "Question:" may span tokens, so the decoded text is checked.
            if (until.Count > 0)
            {
                string text = tokenizer.Decode(generated);
                if (until.Any(s => text.Contains(s, StringComparison.Ordinal))) break;
            }
            next = [token];
        }
        return tokenizer.Decode(generated);
    }
}
