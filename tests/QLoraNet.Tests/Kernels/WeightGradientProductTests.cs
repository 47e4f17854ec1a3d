using QLoraNet.Kernels;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Kernels.KernelTestData;

namespace QLoraNet.Tests.Kernels;

/// <summary>The weight-gradient accumulation's reference is autograd's arithmetic (the product rounded to the operand
/// dtype, then added, scaled, in fp32), the CPU takes it and says so, and bad shapes are refused. The fp32-epilogue
/// GEMM itself is CUDA-only (`bench kernel --only lora` checks it on the device).</summary>
[Trait("tier", "unit")]
public class WeightGradientProductTests
{
    [Fact]
    public void Reference_is_autograds_arithmetic_bit_for_bit()
    {
        using var scope = NewDisposeScope();
        // dB of a LoRA adapter: (out, N) @ (N, r) in bf16, accumulated into an fp32 gradient that already holds a sum.
        var left = Randn([24, 40], ScalarType.BFloat16, 1).t();                      // (40, 24) transposed view, as dyᵀ
        var right = Randn([24, 8], ScalarType.BFloat16, 2);
        var grad = Randn([40, 8], ScalarType.Float32, 3);
        var expected = grad.clone();
        expected.add_(left.mm(right), alpha: 0.75);
        var unrounded = grad.clone();                                                 // what an fp32 epilogue adds
        unrounded.add_(left.to(ScalarType.Float32).mm(right.to(ScalarType.Float32)), alpha: 0.75);

        WeightGradientProduct.AddProductReference(grad, left, right, 0.75);
        Assert.True(grad.eq(expected).all().item<bool>());
        // The reference rounds the product to bf16 first, which shows: the two paths differ, by about a bf16 step.
        Assert.False(grad.eq(unrounded).all().item<bool>());
        Assert.True(RelativeError(grad, unrounded) < 1.0 / 256);
    }

    [Fact]
    public void Cpu_operands_take_the_reference_and_are_counted()
    {
        using var scope = NewDisposeScope();
        var fused = FusedKernels.Load(CPU).WeightGradients;
        Assert.Equal(FusedPath.TorchOps, fused.Path);
        var grad = zeros(4, 3);
        var left = ones(4, 5, ScalarType.BFloat16);
        var right = full(5, 3, 2f, ScalarType.BFloat16);
        Assert.False(fused.Fits(grad, left, right));
        fused.AddProduct(grad, left, right, 0.5);
        fused.AddProduct(grad, left, right, 0.5);
        Assert.Equal(10f, grad[3, 2].item<float>());                                 // 2 x 0.5 x (5 x 2)
        Assert.Equal((0L, 2L), fused.Calls);
        Assert.Contains(KernelSelection.For(CPU).Report(), l => l == "lora weight gradients on cpu: torch-ops (CPU tensors: torch-op reference)");
    }

    [Fact]
    public void Mismatched_shapes_are_refused_before_anything_is_written()
    {
        using var scope = NewDisposeScope();
        var fused = WeightGradientProduct.Reference();
        var grad = zeros(4, 3);
        var e = Assert.Throws<ArgumentException>(() => fused.AddProduct(grad, ones(4, 5), ones(6, 3), 1.0));
        Assert.Contains("[4, 5] @ [6, 3]", e.Message);
        Assert.Throws<ArgumentException>(() => fused.AddProduct(grad, ones(3, 5), ones(5, 3), 1.0));
        Assert.Equal(0f, grad.abs().sum().item<float>());
    }
}
