using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Kernels;

/// <summary>
/// Next-token cross-entropy summed over the counted tokens, computed from the final hidden states and the output
/// head in chunks of tokens, so that the (tokens, vocab) fp32 logits, their log-softmax and their gradient never
/// exist at once. Memory for the loss drops from ~20 bytes per logit of the whole batch to ~20 bytes per logit of
/// one chunk. Two ways to get the gradient, neither of which keeps a chunk's logits:
/// <list type="bullet">
/// <item>a frozen head (the usual case): each chunk's gradient with respect to its hidden rows is taken in forward,
/// right after its loss (as Liger-Kernel's fused linear cross-entropy does), and kept, (tokens, H) in the compute
/// dtype; backward only scales it by the incoming gradient. Two head matmuls per token, as the full logits' path;</item>
/// <item>a head with trainable parameters (LoRA on lm_head), whose gradients must wait for backward: forward keeps
/// nothing but the hidden states and backward makes each chunk's logits again and back-propagates through them
/// into the rows and the parameters. One head matmul more per token.</item>
/// </list>
/// With a frozen head, no transform and a <see cref="InPlaceLoss"/>, each chunk's logits stay in the compute dtype
/// and <see cref="FusedCrossEntropy"/> writes their gradient over them (one CUDA kernel for the loss and the gradient,
/// its torch-op reference elsewhere): ~2 bytes a logit of the chunk instead of ~18, the same arithmetic in fp32.
/// Otherwise each chunk runs exactly the reference's ops on its rows (the head, the cast to fp32, an optional logit transform
/// such as Gemma 2's final soft-capping, F.cross_entropy with ignore_index, autograd's backward through them), so
/// per-token losses equal those of the whole batch whenever the chunk's head matmul rounds like the big one's; the
/// sum differs from one big reduction only in fp32 summation order, and the gradient of the frozen-head way by
/// where the scaling by the incoming gradient rounds (ChunkedCrossEntropyTests states the bounds). Pure torch ops.
/// Drop-in: <c>CausalLmLoss.Sum(model.Logits(hidden), labels)</c> is
/// <c>ChunkedCrossEntropy.Sum(hidden, model.Logits, labels, chunkTokens, handles, headTrains: ...)</c>; divide by
/// <see cref="Count"/> for the mean.
/// </summary>
public static class ChunkedCrossEntropy
{
    /// <summary>Labels equal to this (prompt tokens, padding) do not count, as in Hugging Face and torch.</summary>
    public const long IgnoreIndex = -100;

    /// <summary>Logits per chunk when the caller does not choose: 16M (64 MiB in fp32), ~330 MiB of transients.</summary>
    public const long DefaultLogitsPerChunk = 1L << 24;

    /// <summary>Tokens per chunk for a vocabulary of <paramref name="vocab"/>: <paramref name="logitsPerChunk"/> / vocab, at least 64.</summary>
    public static long TokensPerChunk(long vocab, long logitsPerChunk = DefaultLogitsPerChunk) => Math.Max(64, logitsPerChunk / Math.Max(1, vocab));

    /// <summary>A head that is a plain (vocab, H) weight: rows -> fp32 logits, with the weight cast to the rows' dtype
    /// (fp64 rows keep fp64 logits, for tests that check the arithmetic to fp64 precision).</summary>
    public static Func<Tensor, Tensor> LinearHead(Tensor weight) => rows =>
    {
        using var scope = NewDisposeScope();
        var logits = F.linear(rows, weight.to(rows.dtype));
        if (logits.dtype != ScalarType.Float64) logits = logits.to(ScalarType.Float32);
        return logits.MoveToOuterDisposeScope();
    };

    /// <param name="hidden">(B, T, H) final hidden states (after the last norm) in the compute dtype.</param>
    /// <param name="logitsOf">the head: (c, H) rows -> (c, vocab) fp32 logits (the model's Logits, or <see cref="LinearHead"/>).</param>
    /// <param name="labels">(B, T) int64 token ids or <see cref="IgnoreIndex"/>; position t is predicted from t - 1.</param>
    /// <param name="chunkTokens">tokens per chunk (<see cref="TokensPerChunk"/>).</param>
    /// <param name="handles">where backward defers the gradient it returns (the model's).</param>
    /// <param name="logitTransform">applied to each chunk's fp32 logits before the loss (e.g. soft-capping
    /// cap * tanh(logits / cap)); null = none. Autograd differentiates through it.</param>
    /// <param name="headTrains">the head holds parameters that require grad (LoRA on lm_head): backward recomputes
    /// the chunks to reach them. False: the head is frozen and forward takes the rows' gradient.</param>
    /// <param name="inPlace">the fused loss and the head's logits in the compute dtype (before the cast to fp32 that
    /// <paramref name="logitsOf"/> ends with): used for a frozen head without <paramref name="logitTransform"/>.</param>
    /// <returns>fp32 scalar (fp64 for fp64 logits): the sum over counted tokens of -log softmax(logits[t-1])[labels[t]].</returns>
    public static Tensor Sum(Tensor hidden, Func<Tensor, Tensor> logitsOf, Tensor labels, long chunkTokens, BackwardHandles handles,
        Func<Tensor, Tensor>? logitTransform = null, bool headTrains = false, InPlaceLoss? inPlace = null)
    {
        if (chunkTokens < 1) throw new ArgumentException($"chunk of {chunkTokens} tokens: must be at least 1");
        var head = new Head(logitsOf, logitTransform, logitTransform is null ? inPlace : null);
        if (!torch.is_grad_enabled() || (!headTrains && !hidden.requires_grad)) return SumWithoutGraph(hidden, head, labels, chunkTokens);
        if (!headTrains) return GradientInForwardFunction.Call(hidden, head, labels, chunkTokens, handles);
        // The head may close over trainable parameters (an adapter on lm_head) that only backward's recomputation
        // reaches: the function's output must take part in the graph even when the hidden states do not.
        if (!hidden.requires_grad)
        {
            var leaf = hidden.detach().requires_grad_(true);
            return LossFunction.Call(leaf, head, labels, chunkTokens, handles);
        }
        return LossFunction.Call(hidden, head, labels, chunkTokens, handles);
    }

    /// <summary>The number of tokens that count: labels[:, 1:] != IgnoreIndex (int64 scalar).</summary>
    public static Tensor Count(Tensor labels) => labels.narrow(1, 1, labels.shape[1] - 1).ne(IgnoreIndex).sum();

    /// <summary>A chunk's loss and gradient written over its logits in the compute dtype: the op (kernel or reference,
    /// <see cref="FusedKernels.CrossEntropy"/>) and the head's logits before their cast to fp32 (the model's
    /// ComputeDTypeLogits).</summary>
    public sealed record InPlaceLoss(FusedCrossEntropy Op, Func<Tensor, Tensor> ComputeDTypeLogitsOf);

    /// <summary>The projection and the transform of one loss, and the in-place way where it applies.</summary>
    sealed record Head(Func<Tensor, Tensor> LogitsOf, Func<Tensor, Tensor>? Transform, InPlaceLoss? InPlace)
    {
        public Tensor Logits(Tensor rows)
        {
            var logits = LogitsOf(rows);
            return Transform is null ? logits : Transform(logits);
        }
    }

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

    /// <summary>Summed cross-entropy of one chunk of rows: the reference's ops exactly.</summary>
    static Tensor ChunkLoss(Tensor rows, Head head, Tensor targets)
    {
        using var scope = NewDisposeScope();
        var logits = head.Logits(rows);                                                    // (c, vocab) fp32
        return F.cross_entropy(logits, targets, ignore_index: IgnoreIndex, reduction: nn.Reduction.Sum).MoveToOuterDisposeScope();
    }

    /// <summary>The chunks' losses added up (the forward, also the whole computation when no graph is wanted).</summary>
    static Tensor SumWithoutGraph(Tensor hidden, Head head, Tensor labels, long chunk)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var rows = hidden.reshape(-1, hidden.shape[^1]);                                   // (B*T, H), a view
        var targets = ShiftedTargets(labels);                                              // (B*T)
        Tensor? total = null;
        for (long start = 0; start < rows.shape[0]; start += chunk)
        {
            long n = Math.Min(chunk, rows.shape[0] - start);
            using var chunkScope = NewDisposeScope();
            // Evaluation takes the in-place way too where it applies: its gradient is not read, but the chunk costs a
            // fraction of the fp32 logits' memory and time.
            var loss = head.InPlace is { } inPlace
                ? inPlace.Op.LossAndGradientInPlace(inPlace.ComputeDTypeLogitsOf(rows.narrow(0, start, n)), targets.narrow(0, start, n), IgnoreIndex).sum()
                : ChunkLoss(rows.narrow(0, start, n), head, targets.narrow(0, start, n));
            if (total is null) total = loss.MoveToOuterDisposeScope();
            else total.add_(loss);
        }
        return (total ?? zeros(Array.Empty<long>(), ScalarType.Float32, hidden.device)).MoveToOuterDisposeScope();
    }

    /// <summary>forward(hidden, head, labels, chunkTokens, handles) -> fp32 scalar sum; a frozen head: the gradient of
    /// the sum with respect to hidden is taken chunk by chunk in forward and scaled in backward.</summary>
    sealed class GradientInForwardFunction : CachelessFunction<GradientInForwardFunction>
    {
        public override string Name => "ChunkedCrossEntropyGradientInForward";

        protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
        {
            var (hidden, head, labels, chunk, handles) = ((Tensor)vars[0], (Head)vars[1], (Tensor)vars[2], (long)vars[3], (BackwardHandles)vars[4]);
            using var scope = NewDisposeScope();
            var rows = hidden.detach().reshape(-1, hidden.shape[^1]);                      // (B*T, H), a view
            var targets = ShiftedTargets(labels);
            var grad = empty_like(rows);                                                   // (B*T, H) d(sum)/d(rows)
            Tensor? total = null;
            using (var enableGrad = torch.enable_grad())
                for (long start = 0; start < rows.shape[0]; start += chunk)
                {
                    long n = Math.Min(chunk, rows.shape[0] - start);
                    using var chunkScope = NewDisposeScope();
                    var leaf = rows.narrow(0, start, n).detach().requires_grad_(true);
                    Tensor loss;
                    if (head.InPlace is { } inPlace)
                    {
                        var logits = inPlace.ComputeDTypeLogitsOf(leaf);                     // (n, vocab) compute dtype
                        var gradLogits = logits.detach();                                  // the same storage
                        loss = inPlace.Op.LossAndGradientInPlace(gradLogits, targets.narrow(0, start, n), IgnoreIndex).sum();
                        // The head's backward (g @ W for a linear head) reads the gradient, not its own output.
                        grad.narrow(0, start, n).copy_(torch.autograd.grad([logits], [leaf], [gradLogits])[0]);
                    }
                    else
                    {
                        loss = ChunkLoss(leaf, head, targets.narrow(0, start, n));
                        grad.narrow(0, start, n).copy_(torch.autograd.grad([loss], [leaf])[0]);
                    }
                    if (total is null) total = loss.detach().MoveToOuterDisposeScope();
                    else total.add_(loss.detach());
                }
            ctx.save_for_backward([SavedTensors.Keep(grad.view(hidden.shape))]);
            ctx.save_data("handles", handles);
            return (total ?? zeros(Array.Empty<long>(), ScalarType.Float32, hidden.device)).MoveToOuterDisposeScope();
        }

        protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor gradOutput) =>
            BackwardFailure.Guard(() => Gradients(ctx, gradOutput));   // a failure must not cross the native callback

        List<Tensor> Gradients(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var handles = (BackwardHandles)ctx.get_data("handles");
            // The scaling in fp32 (the incoming gradient, 1 / terms for a step's mean, is no bf16 number), one rounding.
            // In a scope of its own: on CUDA this runs on libtorch's device thread, outside every dispose scope, where
            // the fp32 copy (tokens x hidden, 64 MB per micro-batch of 4 x 1024 tokens on a 7B model) would otherwise
            // wait for the garbage collector.
            Tensor gradHidden;
            using (var scope = NewDisposeScope())
                gradHidden = saved[0].to(gradOutput.dtype).mul_(gradOutput).to(saved[0].dtype).MoveToOuterDisposeScope();
            foreach (var t in saved) t.Dispose();
            gradOutput.Dispose(); // see BackwardHandles
            return [handles.Defer(gradHidden), null!, null!, null!, null!];
        }
    }

    /// <summary>forward(hidden, head, labels, chunkTokens, handles) -> fp32 scalar sum; backward recomputes each chunk.</summary>
    sealed class LossFunction : CachelessFunction<LossFunction>
    {
        public override string Name => "ChunkedCrossEntropy";

        protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
        {
            var (hidden, head, labels, chunk, handles) = ((Tensor)vars[0], (Head)vars[1], (Tensor)vars[2], (long)vars[3], (BackwardHandles)vars[4]);
            using var scope = NewDisposeScope();
            var total = SumWithoutGraph(hidden, head, labels, chunk);
            ctx.save_for_backward([hidden, SavedTensors.Keep(ShiftedTargets(labels))]);
            ctx.save_data("head", head);
            ctx.save_data("chunk", chunk);
            ctx.save_data("handles", handles);
            return total.MoveToOuterDisposeScope();
        }

        protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor gradOutput) =>
            BackwardFailure.Guard(() => Gradients(ctx, gradOutput));   // a failure must not cross the native callback

        List<Tensor> Gradients(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var (hidden, targets) = (saved[0], saved[1]);
            var head = (Head)ctx.get_data("head");
            long chunk = (long)ctx.get_data("chunk");
            var handles = (BackwardHandles)ctx.get_data("handles");
            Tensor gradHidden;
            using (var scope = NewDisposeScope())
            {
                var rows = hidden.reshape(-1, hidden.shape[^1]);
                var grad = empty_like(rows);                                               // (B*T, H)
                using var enableGrad = torch.enable_grad();
                for (long start = 0; start < rows.shape[0]; start += chunk)
                {
                    long n = Math.Min(chunk, rows.shape[0] - start);
                    using var chunkScope = NewDisposeScope();
                    // Recompute the chunk with a graph and back-propagate through it: the reference's backward ops,
                    // into the rows and into any trainable parameter of the head.
                    var leaf = rows.narrow(0, start, n).detach().requires_grad_(true);
                    var loss = ChunkLoss(leaf, head, targets.narrow(0, start, n));
                    torch.autograd.backward([loss], [gradOutput]);
                    var g = leaf.grad;
                    if (g is null) grad.narrow(0, start, n).zero_();
                    else grad.narrow(0, start, n).copy_(g);
                }
                gradHidden = grad.view(hidden.shape).MoveToOuterDisposeScope();
            }
            foreach (var t in saved) t.Dispose();
            gradOutput.Dispose(); // see BackwardHandles
            return [handles.Defer(gradHidden), null!, null!, null!, null!];
        }
    }
}
