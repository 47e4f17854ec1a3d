using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Models;

/// <summary>Summed next-token loss over counted predictions; mean and perplexity follow.</summary>
public sealed record LossTotals(double Sum, long Tokens)
{
    public double Mean => Tokens == 0 ? double.NaN : Sum / Tokens;
    public double Perplexity => Math.Exp(Mean);
}

/// <summary>
/// Next-token loss of a long token sequence, in windows of at most <c>maxLen</c> tokens (the model's context).
/// Windows start every <c>stride</c> tokens; each scores only the tokens no earlier window scored, so with
/// stride = maxLen (the default) windows do not overlap and a window's first token is context only, while a smaller
/// stride gives later windows more context (Hugging Face's "perplexity of fixed-length models" recipe). Every token
/// after the first is predicted at most once; the mean is over all predicted tokens, in fp32 (cross-entropy summed).
/// </summary>
public static class WindowedLoss
{
    public static LossTotals Compute(LlamaForCausalLM model, IReadOnlyList<long> ids, int maxLen, int stride)
    {
        if (maxLen < 2) throw new ArgumentException($"--max-len {maxLen} must be at least 2 (one token of context, one to predict)");
        if (stride < 1 || stride > maxLen) throw new ArgumentException($"--stride {stride} must be in [1, max-len {maxLen}]");
        if (ids.Count < 2) throw new ArgumentException($"the text has {ids.Count} token(s); at least 2 are needed to predict one");

        double sum = 0;
        long tokens = 0, scoredUpTo = 1; // token 0 (BOS) is never predicted
        using var noGrad = no_grad();
        for (int begin = 0; scoredUpTo < ids.Count; begin += stride)
        {
            int end = Math.Min(begin + maxLen, ids.Count);
            long firstScored = Math.Max(scoredUpTo, begin + 1);
            if (firstScored >= end) continue;
            using var scope = NewDisposeScope();
            var window = tensor(ids.Skip(begin).Take(end - begin).ToArray(), device: model.Device).unsqueeze(0); // (1, T)
            var logits = model.forward(window);                                   // (1, T, vocab) fp32
            long skip = firstScored - begin;                                      // labels before this were scored already
            var predicting = logits[0].narrow(0, skip - 1, end - firstScored);    // (n, vocab): position t predicts t+1
            var targets = window[0].narrow(0, skip, end - firstScored);           // (n)
            sum += F.cross_entropy(predicting, targets, reduction: nn.Reduction.Sum).to(ScalarType.Float64).item<double>();
            tokens += end - firstScored;
            scoredUpTo = end;
        }
        return new LossTotals(sum, tokens);
    }
}
