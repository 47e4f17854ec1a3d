using QLoraNet.Kernels;
using QLoraNet.Models;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Kernels.KernelTestData;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Tests.Kernels;

/// <summary>The chunked loss against the full one (head matmul over all tokens, fp32 logits, CausalLmLoss.Sum):
/// the same function in fp64, within fp32's error bound in fp32, for chunk sizes that do and do not divide the
/// tokens, with ignored labels.</summary>
[Trait("tier", "unit")]
public class ChunkedCrossEntropyTests
{
    internal const long B = 2, T = 7, H = 16, Vocab = 50;

    /// <summary>(B, T, H) hidden states, a (Vocab, H) head and labels with a prompt token and padding ignored
    /// (FusedCrossEntropyTests uses them too).</summary>
    internal static (Tensor Hidden, Tensor Weight, Tensor Labels) Inputs(ScalarType dtype)
    {
        var hidden = Randn([B, T, H], dtype, 1);
        var weight = Randn([Vocab, H], dtype, 2, 0.5);
        using var g = new Generator(3);
        var labels = randint(0, Vocab, [B, T], ScalarType.Int64, generator: g);
        labels[0, 3] = tensor(ChunkedCrossEntropy.IgnoreIndex);   // a prompt token
        labels[1, 5] = tensor(ChunkedCrossEntropy.IgnoreIndex);
        labels[1, 6] = tensor(ChunkedCrossEntropy.IgnoreIndex);   // padding at the end of a row
        return (hidden, weight, labels);
    }

    static Tensor FullLoss(Tensor hidden, Tensor weight, Tensor labels) =>
        CausalLmLoss.Sum(F.linear(hidden, weight).to(ScalarType.Float32), labels);

    [Theory]
    [InlineData(1, false)]
    [InlineData(3, false)]
    [InlineData(5, false)]
    [InlineData(1000, false)]
    [InlineData(3, true)]
    [InlineData(1000, true)]
    public void Equals_the_full_loss_and_gradient_in_fp64(long chunk, bool headTrains)
    {
        using var scope = NewDisposeScope();
        var (hidden, weight, labels) = Inputs(ScalarType.Float64);
        var h1 = hidden.clone().requires_grad_(true);
        var h2 = hidden.clone().requires_grad_(true);
        // CausalLmLoss casts logits to fp32; in fp64 the reference is the same formula without that cast.
        var full = F.cross_entropy(F.linear(h1, weight).narrow(1, 0, T - 1).reshape(-1, Vocab), labels.narrow(1, 1, T - 1).reshape(-1),
            ignore_index: ChunkedCrossEntropy.IgnoreIndex, reduction: nn.Reduction.Sum);
        var chunked = ChunkedCrossEntropy.Sum(h2, ChunkedCrossEntropy.LinearHead(weight), labels, chunk, new BackwardHandles(), headTrains: headTrains);
        Assert.Equal(ScalarType.Float64, chunked.dtype);
        Assert.True(RelativeError(chunked, full) < 1e-14, $"loss {chunked.item<double>():R} vs {full.item<double>():R}");
        // A step's mean scales the sum: the incoming gradient is not 1.
        (full * 0.37).backward();
        (chunked * 0.37).backward();
        Assert.True(RelativeError(h2.grad!, h1.grad!) < 1e-13, $"gradient {RelativeError(h2.grad!, h1.grad!):G3}");
    }

    [Theory]
    [InlineData(4)]
    [InlineData(0)] // the default chunk
    public void Matches_the_full_loss_in_fp32_within_the_error_bound_of_each(long chunk)
    {
        using var scope = NewDisposeScope();
        var (hidden, weight, labels) = Inputs(ScalarType.Float32);
        var h1 = hidden.clone().requires_grad_(true);
        var h2 = hidden.clone().requires_grad_(true);
        var full = FullLoss(h1, weight, labels);
        var chunked = ChunkedCrossEntropy.Sum(h2, ChunkedCrossEntropy.LinearHead(weight), labels, chunk == 0 ? ChunkedCrossEntropy.TokensPerChunk(Vocab) : chunk, new BackwardHandles());
        Assert.Equal(ScalarType.Float32, chunked.dtype);
        full.backward();
        chunked.backward();
        var (lossBound, gradBound) = Fp32Bounds(hidden, weight, labels);
        // Each is within its bound of the exact value, so they are within twice it of each other.
        Assert.True(Math.Abs(chunked.item<float>() - full.item<float>()) <= 2 * lossBound,
            $"loss {chunked.item<float>():R} vs {full.item<float>():R}, bound {2 * lossBound:G3}");
        AssertWithin(h2.grad!, h1.grad!, 2 * gradBound, "gradient");
    }

    [Fact]
    public void A_logit_transform_applies_per_chunk_as_on_the_full_logits_in_fp64()
    {
        // Gemma 2's final soft-capping: cap * tanh(logits / cap), differentiated through by autograd in both.
        using var scope = NewDisposeScope();
        var (hidden, weight, labels) = Inputs(ScalarType.Float64);
        Func<Tensor, Tensor> softCap = logits => (logits / 2.0).tanh() * 2.0;
        var h1 = hidden.clone().requires_grad_(true);
        var h2 = hidden.clone().requires_grad_(true);
        var full = F.cross_entropy(softCap(F.linear(h1, weight)).narrow(1, 0, T - 1).reshape(-1, Vocab), labels.narrow(1, 1, T - 1).reshape(-1),
            ignore_index: ChunkedCrossEntropy.IgnoreIndex, reduction: nn.Reduction.Sum);
        var chunked = ChunkedCrossEntropy.Sum(h2, ChunkedCrossEntropy.LinearHead(weight), labels, 4, new BackwardHandles(), softCap);
        Assert.True(RelativeError(chunked, full) < 1e-14, $"loss {chunked.item<double>():R} vs {full.item<double>():R}");
        // The cap changes the loss: the transform was applied, not skipped.
        var uncapped = ChunkedCrossEntropy.Sum(hidden, ChunkedCrossEntropy.LinearHead(weight), labels, 4, new BackwardHandles());
        Assert.True(RelativeError(uncapped, full) > 1e-3);
        full.backward();
        chunked.backward();
        Assert.True(RelativeError(h2.grad!, h1.grad!) < 1e-13, $"gradient {RelativeError(h2.grad!, h1.grad!):G3}");
    }

    [Fact]
    public void A_head_with_trainable_parameters_gets_their_gradient_from_the_recomputation()
    {
        // LoRA on lm_head: the head closes over a parameter that is not an input of the loss function; backward's
        // recomputation must still accumulate its gradient, as plain autograd through the full logits does. The
        // hidden states here do not require grad (no adapter below the head).
        using var scope = NewDisposeScope();
        var (hidden, weight, labels) = Inputs(ScalarType.Float64);
        var delta1 = zeros_like(weight).requires_grad_(true);
        var delta2 = zeros_like(weight).requires_grad_(true);
        var full = F.cross_entropy(F.linear(hidden, weight + delta1).narrow(1, 0, T - 1).reshape(-1, Vocab), labels.narrow(1, 1, T - 1).reshape(-1),
            ignore_index: ChunkedCrossEntropy.IgnoreIndex, reduction: nn.Reduction.Sum);
        var handles = new BackwardHandles();
        var chunked = ChunkedCrossEntropy.Sum(hidden, rows => F.linear(rows, weight + delta2), labels, 3, handles, headTrains: true);
        Assert.True(chunked.requires_grad);
        full.backward();
        chunked.backward();
        handles.Release();
        Assert.True(RelativeError(delta2.grad!, delta1.grad!) < 1e-13, $"gradient {RelativeError(delta2.grad!, delta1.grad!):G3}");
        Assert.True(delta1.grad!.abs().max().item<double>() > 0);
    }

    [Fact]
    public void Without_gradients_it_is_the_same_sum_and_builds_no_graph()
    {
        using var scope = NewDisposeScope();
        var (hidden, weight, labels) = Inputs(ScalarType.Float32);
        var h = hidden.requires_grad_(true);
        var withGraph = ChunkedCrossEntropy.Sum(h, ChunkedCrossEntropy.LinearHead(weight), labels, 5, new BackwardHandles());
        using var noGrad = torch.no_grad();
        var evaluated = ChunkedCrossEntropy.Sum(h, ChunkedCrossEntropy.LinearHead(weight), labels, 5, new BackwardHandles());
        Assert.False(evaluated.requires_grad);
        AssertIdentical(evaluated, withGraph.detach(), "loss");
    }

    [Fact]
    public void All_ignored_labels_give_zero_loss_and_zero_gradient()
    {
        using var scope = NewDisposeScope();
        var (hidden, weight, _) = Inputs(ScalarType.Float32);
        var h = hidden.requires_grad_(true);
        var labels = full([B, T], ChunkedCrossEntropy.IgnoreIndex, ScalarType.Int64);
        var loss = ChunkedCrossEntropy.Sum(h, ChunkedCrossEntropy.LinearHead(weight), labels, 3, new BackwardHandles());
        loss.backward();
        Assert.Equal(0f, loss.item<float>());
        Assert.Equal(0.0, h.grad!.abs().max().item<float>());
        Assert.Equal(0L, ChunkedCrossEntropy.Count(labels).item<long>());
    }

    [Fact]
    public void Count_is_the_shifted_labels_that_are_not_ignored()
    {
        using var scope = NewDisposeScope();
        var (_, _, labels) = Inputs(ScalarType.Float32);
        Assert.Equal(B * (T - 1) - 3, ChunkedCrossEntropy.Count(labels).item<long>());
    }

    /// <summary>
    /// fp32 error bounds of the loss and of its gradient with respect to hidden, from the arithmetic: a logit is a
    /// length-H dot product (error up to gamma_H sum_k |h_k W_jk|); a token's loss lse - x_t moves by at most twice
    /// the largest logit error plus (V + 8) roundoffs of |lse| + |x_t| (log-softmax: V exps summed); the sum over
    /// N tokens adds up to N roundoffs of the sum of |loss_i|. The gradient (p - onehot) W moves by the softmax's
    /// relative error times p |W| plus the length-V product's gamma_V (p + onehot) |W|.
    /// </summary>
    static (double Loss, Tensor Grad) Fp32Bounds(Tensor hidden, Tensor weight, Tensor labels)
    {
        double u = Roundoff(ScalarType.Float32);
        var h = hidden.to(ScalarType.Float64).reshape(-1, H);
        var w = weight.to(ScalarType.Float64);
        var targets = cat([labels.narrow(1, 1, T - 1), full([B, 1L], ChunkedCrossEntropy.IgnoreIndex, ScalarType.Int64)], 1).reshape(-1);
        var valid = targets.ne(ChunkedCrossEntropy.IgnoreIndex).to(ScalarType.Float64);
        var safe = targets.clamp_min(0);
        var logits = h.matmul(w.t());
        var lse = logits.logsumexp(1);
        var picked = logits.gather(1, safe.unsqueeze(1)).squeeze(1);
        var loss = (lse - picked) * valid;
        double gammaH = H * u / (1 - H * u), gammaV = Vocab * u / (1 - Vocab * u);
        var logitError = gammaH * h.abs().matmul(w.abs().t()).max(1).values;           // (N)
        var perToken = (2 * logitError + (Vocab + 8) * u * (lse.abs() + picked.abs())) * valid;
        double lossBound = perToken.sum().item<double>() + B * T * u * loss.abs().sum().item<double>();
        var p = (logits - lse.unsqueeze(1)).exp();
        var onehot = zeros_like(p).scatter_(1, safe.unsqueeze(1), ones_like(p)) * valid.unsqueeze(1);
        var rel = (2 * logitError + (Vocab + 8) * u).unsqueeze(1);
        var gradBound = ((p * rel) * valid.unsqueeze(1)).matmul(w.abs()) + gammaV * (p * valid.unsqueeze(1) + onehot).matmul(w.abs());
        var trueGrad = ((p - onehot) * valid.unsqueeze(1)).matmul(w);
        return (lossBound, (gradBound + 2 * u * trueGrad.abs()).reshape(B, T, H)); // plus the gradient's own rounding
    }
}
