using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Kernels.KernelTestData;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Tests.Kernels;

/// <summary>The loss's in-place way (<see cref="FusedCrossEntropy"/> through <see cref="ChunkedCrossEntropy"/>) on the
/// CPU, where its torch-op reference runs: the same function as the full loss in fp64, the same gradient bits as the
/// fp32-logits way in bf16, ignored rows, and the op's contract. The kernel itself is held to the reference on the
/// device by `bench kernel` (cross_entropy parity) and on the CPU, compiled as C++, by
/// tests/KernelsOnCpu/check_cross_entropy.cpp.</summary>
[Trait("tier", "unit")]
public class FusedCrossEntropyTests
{
    const long B = ChunkedCrossEntropyTests.B, T = ChunkedCrossEntropyTests.T, Vocab = ChunkedCrossEntropyTests.Vocab;

    static readonly FusedCrossEntropy Op = FusedKernels.Reference().CrossEntropy;

    static (Tensor Hidden, Tensor Weight, Tensor Labels) Inputs(ScalarType dtype) => ChunkedCrossEntropyTests.Inputs(dtype);

    static ChunkedCrossEntropy.InPlaceLoss InPlace(Tensor weight) => new(Op, rows => F.linear(rows, weight));

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(1000)]
    public void Equals_the_full_loss_and_gradient_in_fp64(long chunk)
    {
        using var scope = NewDisposeScope();
        var (hidden, weight, labels) = Inputs(ScalarType.Float64);
        var h1 = hidden.clone().requires_grad_(true);
        var h2 = hidden.clone().requires_grad_(true);
        var full = F.cross_entropy(F.linear(h1, weight).narrow(1, 0, T - 1).reshape(-1, Vocab), labels.narrow(1, 1, T - 1).reshape(-1),
            ignore_index: ChunkedCrossEntropy.IgnoreIndex, reduction: nn.Reduction.Sum);
        var (kernelBefore, referenceBefore) = Op.Calls;
        var inPlace = ChunkedCrossEntropy.Sum(h2, ChunkedCrossEntropy.LinearHead(weight), labels, chunk, new BackwardHandles(), inPlace: InPlace(weight));
        Assert.Equal(ScalarType.Float64, inPlace.dtype);
        Assert.True(RelativeError(inPlace, full) < 1e-14, $"loss {inPlace.item<double>():R} vs {full.item<double>():R}");
        (full * 0.37).backward();
        (inPlace * 0.37).backward();
        Assert.True(RelativeError(h2.grad!, h1.grad!) < 1e-13, $"gradient {RelativeError(h2.grad!, h1.grad!):G3}");
        // Every chunk went through the op, on its reference (CPU tensors).
        long chunks = (B * T + chunk - 1) / chunk;
        Assert.Equal((kernelBefore, referenceBefore + chunks), Op.Calls);
        // Evaluation (no graph) takes the same way to the same sum.
        using (no_grad())
        {
            var evaluated = ChunkedCrossEntropy.Sum(hidden, ChunkedCrossEntropy.LinearHead(weight), labels, chunk, new BackwardHandles(), inPlace: InPlace(weight));
            Assert.True(RelativeError(evaluated, full) < 1e-14, $"evaluation {evaluated.item<double>():R} vs {full.item<double>():R}");
        }
        Assert.Equal((kernelBefore, referenceBefore + 2 * chunks), Op.Calls);
    }

    [Theory]
    [InlineData(3)]
    [InlineData(1000)]
    public void In_bf16_gives_the_gradient_bits_of_the_fp32_logits_way(long chunk)
    {
        using var scope = NewDisposeScope();
        var (hidden, weight, labels) = Inputs(ScalarType.BFloat16);
        var h1 = hidden.clone().requires_grad_(true);
        var h2 = hidden.clone().requires_grad_(true);
        var torchOps = ChunkedCrossEntropy.Sum(h1, ChunkedCrossEntropy.LinearHead(weight), labels, chunk, new BackwardHandles());
        var inPlace = ChunkedCrossEntropy.Sum(h2, ChunkedCrossEntropy.LinearHead(weight), labels, chunk, new BackwardHandles(), inPlace: InPlace(weight));
        // The same fp32 terms, summed per row first: equal up to fp32 summation order over 14 terms.
        Assert.True(RelativeError(inPlace, torchOps) < 14 * Math.Pow(2, -23), $"loss {inPlace.item<float>():R} vs {torchOps.item<float>():R}");
        torchOps.backward();
        inPlace.backward();
        // softmax - onehot in fp32, rounded once to bf16, through the head's backward: the same ops on the same values.
        Assert.True(h2.grad!.eq(h1.grad!).all().item<bool>(), $"gradient differs by {RelativeError(h2.grad!, h1.grad!):G3}");
    }

    [Fact]
    public void The_reference_gives_each_row_its_loss_and_overwrites_the_logits_with_the_gradient()
    {
        using var scope = NewDisposeScope();
        var logits = Randn([4, Vocab], ScalarType.Float32, 5, 3.0);
        var targets = tensor(new long[] { 0, Vocab - 1, ChunkedCrossEntropy.IgnoreIndex, 17 });
        var x = logits.clone();
        var loss = Op.LossAndGradientInPlace(logits, targets, ChunkedCrossEntropy.IgnoreIndex);
        var lse = x.to(ScalarType.Float64).logsumexp(1);
        var softmax = x.to(ScalarType.Float64).softmax(1);
        foreach (var (row, t) in new[] { (0, 0L), (1, Vocab - 1), (3, 17L) })
        {
            Assert.Equal(lse[row].item<double>() - x[row, t].item<float>(), loss[row].item<float>(), 5);
            var want = softmax[row].clone();
            want[t] -= 1.0;
            Assert.True(RelativeError(logits[row].to(ScalarType.Float64), want) < 1e-6, $"row {row}");
        }
        Assert.Equal(0f, loss[2].item<float>());
        Assert.True(logits[2].eq(0).all().item<bool>(), "an ignored row's gradient is zero");
    }

    [Fact]
    public void Logits_that_hold_a_graph_or_a_wrong_shape_are_refused()
    {
        using var scope = NewDisposeScope();
        var targets = zeros(3, ScalarType.Int64);
        var withGraph = Randn([3, Vocab], ScalarType.Float32, 6).requires_grad_(true);
        var e = Assert.Throws<ArgumentException>(() => Op.LossAndGradientInPlace(withGraph, targets, -100));
        Assert.Contains("detached", e.Message);
        e = Assert.Throws<ArgumentException>(() => Op.LossAndGradientInPlace(zeros(2, Vocab), targets, -100));
        Assert.Contains("(rows, vocab)", e.Message);
    }
}
