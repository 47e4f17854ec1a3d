using QLoraNet.Quant;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>
/// A test-only frozen base: a dense weight kept as a Parameter that still requires grad when built, so the tests
/// prove that applying LoRA freezes it (a real quantized base holds packed buffers instead).
/// </summary>
public sealed class DenseTestLinear : FrozenLinear
{
    private readonly Parameter weight;

    public DenseTestLinear(Tensor w, ScalarType computeDType = ScalarType.Float32)
        : base(nameof(DenseTestLinear), w.shape[1], w.shape[0], computeDType)
    {
        weight = new Parameter(w.detach().clone(), requires_grad: true);
        RegisterComponents();
    }

    /// <summary>A random [out, in] base drawn from <paramref name="seed"/>.</summary>
    public static DenseTestLinear Random(long inFeatures, long outFeatures, long seed)
    {
        using var g = new Generator((ulong)seed);
        using var w = torch.randn(outFeatures, inFeatures, generator: g);
        return new DenseTestLinear(w);
    }

    public Tensor Weight => get_parameter("weight")!;

    public override string FormatName => "dense-test";
    public override long StorageBytes => weight.numel() * weight.element_size();

    public override Tensor DequantizeWeight(ScalarType dtype) => Weight.detach().to(dtype, copy: true);

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = nn.functional.linear(x.to(ComputeDType), Weight.to(ComputeDType));  // (..., out)
        return y.MoveToOuterDisposeScope();
    }
}
