namespace QLoraNet.Evaluation.Scoring;

/// <summary>
/// All that evaluation needs of a model and its tokenizer. Kept small so any model plugs in with one adapter:
/// <see cref="LlamaScoringModel"/> serves every family the model code builds (Llama 2/3, Mistral, Qwen2, Gemma,
/// Gemma 2 share its decoder class) with the family's own tokenizer; a remote server would be another adapter.
/// </summary>
public interface IScoringModel
{
    /// <summary>Ids of <paramref name="text"/> as the tokenizer encodes a whole input, with the special tokens it adds by
    /// default (Llama: BOS first), like Hugging Face's <c>tokenizer.encode(text)</c>.</summary>
    IReadOnlyList<int> Encode(string text);

    /// <summary>Ids of <paramref name="text"/> without BOS/EOS.</summary>
    IReadOnlyList<int> EncodeWithoutSpecialTokens(string text);

    /// <summary>Text of generated ids, special tokens dropped.</summary>
    string Decode(IReadOnlyList<int> ids);

    /// <summary>The token that stands for an empty context (BOS, else EOS), as the harness's prefix_token_id.</summary>
    int PrefixTokenId { get; }

    /// <summary>Ids that end a generation.</summary>
    IReadOnlyList<int> EosIds { get; }

    /// <summary>Longest input in tokens (the model's context, max_position_embeddings).</summary>
    int MaxLength { get; }

    /// <summary>
    /// One forward over a batch. Each row's <see cref="ScoringRow.Input"/> ends with its continuation's tokens except
    /// the last, so position <c>Input.Count - Continuation.Count + i</c> predicts <c>Continuation[i]</c>. Returns, per
    /// row, the summed log-probability of the continuation and whether every continuation token is the argmax.
    /// Rows may differ in length (the adapter pads); results must not depend on the batch they came in.
    /// </summary>
    IReadOnlyList<ContinuationScore> Score(IReadOnlyList<ScoringRow> rows);

    /// <summary>Greedy continuation of <paramref name="contextIds"/>: stops at an EOS id or one of
    /// <paramref name="stopIds"/>, when the decoded text contains one of <paramref name="until"/>, or after
    /// <paramref name="maxNewTokens"/>. Returns the decoded new text (not yet cut at the stop string).</summary>
    string GenerateUntil(IReadOnlyList<int> contextIds, IReadOnlyList<string> until, int maxNewTokens, IReadOnlyList<int> stopIds);
}

/// <summary>One row of a log-likelihood batch (see <see cref="IScoringModel.Score"/>).</summary>
public sealed record ScoringRow(IReadOnlyList<int> Input, IReadOnlyList<int> Continuation);

/// <summary>Summed log-probability of a continuation and whether greedy decoding would have produced it.</summary>
public readonly record struct ContinuationScore(double LogProb, bool IsGreedy);
