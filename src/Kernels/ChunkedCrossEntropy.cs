using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Kernels;

/// <summary>
/// Next-token cross-entropy summed over the counted tokens, computed from the final hidden states and the frozen
/// output head in chunks of tokens, so that the (tokens, vocab) fp32 logits, their log-softmax and their gradient
/// never exist at once: a chunk's logits are made, reduced to its loss and dropped in forward, and made again in
/// backward (the head matmul is the cheap part of the step). Memory for the loss drops from ~20 bytes per logit of
/// the whole batch to ~20 bytes per logit of one chunk; the price is one more head matmul per token.
/// Each chunk runs exactly the reference's ops on its rows (head matmul in the compute dtype, cast to fp32,
/// F.cross_entropy with ignore_index, its autograd backward), so per-token losses and gradients equal those of the
/// whole batch whenever the chunk's head matmul rounds like the big one's; the sum differs from one big reduction
/// only in fp32 summation order (ChunkedCrossEntropyTests states the bound). Pure torch ops: no kernel of its own.
/// Drop-in: <c>CausalLmLoss.Sum(head(hidden) as fp32, labels)</c> is
/// <c>ChunkedCrossEntropy.Sum(hidden, headWeight, labels)</c>; divide by <see cref="Count"/> for the mean.
/// </summary>
public static class ChunkedCrossEntropy
{
    /// <summary>Labels equal to this (prompt tokens, padding) do not count, as in Hugging Face and torch.</summary>
    public const long IgnoreIndex = -100;

    /// <summary>Logits per chunk when the caller does not choose: 16M (64 MiB in fp32), ~330 MiB of transients.</summary>
    public const long DefaultLogitsPerChunk = 1L << 24;

    /// <param name="hidden">(B, T, H) final hidden states (after the last norm) in the compute dtype.</param>
    /// <param name="headWeight">(vocab, H) the frozen output head (or the tied embedding), dense; cast to hidden's dtype.</param>
    /// <param name="labels">(B, T) int64 token ids or <see cref="IgnoreIndex"/>; position t is predicted from t - 1.</param>
    /// <param name="chunkTokens">tokens per chunk; 0 = <see cref="DefaultLogitsPerChunk"/> / vocab (at least 64).</param>
    /// <returns>fp32 scalar (fp64 for fp64 hidden states): the sum over counted tokens of -log softmax(hidden[t-1] W^T)[labels[t]].</returns>
    public static Tensor Sum(Tensor hidden, Tensor headWeight, Tensor labels, long chunkTokens = 0)
    {
        long vocab = headWeight.shape[0];
        if (chunkTokens <= 0) chunkTokens = Math.Max(64, DefaultLogitsPerChunk / vocab);
        return LossFunction.apply(hidden, headWeight, labels, chunkTokens);
    }

    /// <summary>The number of tokens that count: labels[:, 1:] != IgnoreIndex (int64 scalar).</summary>
    public static Tensor Count(Tensor labels) => labels.narrow(1, 1, labels.shape[1] - 1).ne(IgnoreIndex).sum();

    /// <summary>
    /// The target of every position: labels shifted left by one, the last position of each row ignored. Every position
    /// keeps its row so hidden is used as a (B*T, H) view without a copy; the extra row per sequence costs 1/T of the
    /// head matmul and adds nothing to the loss or the gradient.
    /// </summary>
    static Tensor ShiftedTargets(Tensor labels)
    {
        using var scope = NewDisposeScope();
        long b = labels.shape[0], t = labels.shape[1];
        var pad = full(new[] { b, 1L }, IgnoreIndex, ScalarType.Int64, labels.device);
        return cat([labels.narrow(1, 1, t - 1).to(ScalarType.Int64), pad], dim: 1).reshape(-1).MoveToOuterDisposeScope(); // (B*T)
    }

    /// <summary>Summed cross-entropy of one chunk of rows: the reference's ops exactly (logits in fp32, or in fp64
    /// when the hidden states are fp64, as in the tests that check this against the full loss to fp64 precision).</summary>
    static Tensor ChunkLoss(Tensor rows, Tensor weight, Tensor targets)
    {
        using var scope = NewDisposeScope();
        var logits = F.linear(rows, weight);                                              // (c, vocab)
        if (logits.dtype != ScalarType.Float64) logits = logits.to(ScalarType.Float32);
        return F.cross_entropy(logits, targets, ignore_index: IgnoreIndex, reduction: nn.Reduction.Sum).MoveToOuterDisposeScope();
    }

    /// <summary>forward(hidden, headWeight, labels, chunkTokens) -> fp32 scalar sum.</summary>
    sealed class LossFunction : autograd.SingleTensorFunction<LossFunction>
    {
        public override string Name => "ChunkedCrossEntropy";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (hidden, headWeight, labels, chunk) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (long)vars[3]);
            using var scope = NewDisposeScope();
            long width = hidden.shape[^1];
            var rows = hidden.reshape(-1, width);                                          // (B*T, H), a view
            var weight = headWeight.to(hidden.dtype);
            var targets = ShiftedTargets(labels);                                          // (B*T)
            var total = zeros(Array.Empty<long>(), hidden.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32, hidden.device);
            for (long start = 0; start < rows.shape[0]; start += chunk)
            {
                long n = Math.Min(chunk, rows.shape[0] - start);
                using var chunkScope = NewDisposeScope();
                total.add_(ChunkLoss(rows.narrow(0, start, n), weight, targets.narrow(0, start, n)));
            }
            ctx.save_for_backward([hidden, SavedTensors.Keep(weight), SavedTensors.Keep(targets)]);
            ctx.save_data("chunk", chunk);
            return total.MoveToOuterDisposeScope();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var (hidden, weight, targets) = (saved[0], saved[1], saved[2]);
            long chunk = (long)ctx.get_data("chunk");
            Tensor gradHidden;
            using (var scope = NewDisposeScope())
            {
                long width = hidden.shape[^1];
                var rows = hidden.reshape(-1, width);
                var grad = empty_like(rows);                                               // (B*T, H)
                using var enableGrad = torch.enable_grad();
                for (long start = 0; start < rows.shape[0]; start += chunk)
                {
                    long n = Math.Min(chunk, rows.shape[0] - start);
                    using var chunkScope = NewDisposeScope();
                    // Recompute the chunk with a graph and let autograd take it back: the reference's backward ops.
                    var leaf = rows.narrow(0, start, n).detach().requires_grad_(true);
                    var loss = ChunkLoss(leaf, weight, targets.narrow(0, start, n));
                    var g = torch.autograd.grad([loss], [leaf], [gradOutput])[0];
                    grad.narrow(0, start, n).copy_(g);
                }
                gradHidden = grad.view(hidden.shape).MoveToOuterDisposeScope();
            }
            foreach (var t in saved) t.Dispose();
            gradOutput.Dispose(); // see BackwardHandles
            return [BackwardHandles.Defer(gradHidden), null!, null!, null!];
        }
    }
}
