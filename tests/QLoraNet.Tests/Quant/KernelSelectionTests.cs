using QLoraNet.Kernels;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Quant;

[Trait("tier", "unit")]
public class KernelSelectionTests
{
    // torch.CUDA would initialise the CUDA backend, which throws on a CPU-only machine; the selection must not.
    static readonly Device Cuda = new(DeviceType.CUDA, 0);

    [Fact]
    public void The_cpu_choice_is_the_simd_loop_and_is_reported()
    {
        var k = KernelSelection.For(CPU);
        Assert.Equal(FourBitDequantPath.CpuSimd, k.FourBitDequant);
        Assert.StartsWith("nf4/fp4 dequant on cpu: cpu-simd (", k.Report()[0]);
        Assert.Equal("nf4/fp4 quantize on cpu: cpu-simd", k.Report()[1]);
    }

    [Fact]
    public void A_cuda_kernel_that_is_switched_off_or_fails_to_load_is_reported_as_the_reason_for_torch_ops()
    {
        var off = KernelSelection.For(Cuda, new KernelOptions(DisableCuda: true));
        Assert.Equal(FourBitDequantPath.TorchOps, off.FourBitDequant);
        Assert.Equal("nf4/fp4 dequant on cuda: torch-ops (CUDA kernels disabled by the caller)", off.Report()[0]);

        if (cuda.is_available()) return;  // below: what a machine without a usable GPU reports
        var failed = KernelSelection.For(Cuda, new KernelOptions(PtxDir: "/nonexistent"));
        Assert.Equal(FourBitDequantPath.TorchOps, failed.FourBitDequant);
        Assert.StartsWith("the fused kernel failed to load: ", failed.FourBitDequantReason);
        Assert.DoesNotContain("\n", failed.Report()[0]);
    }

    [Fact]
    public void The_fused_training_ops_are_chosen_and_reported_with_the_dequantizer()
    {
        var report = KernelSelection.For(CPU).Report();
        foreach (var op in new[] { "rmsnorm", "rope", "glu", "lora dropout", "adamw" })
            Assert.Contains($"{op} on cpu: torch-ops (CPU tensors: torch-op reference)", report);
        Assert.Contains("cross-entropy on cpu: torch-ops (CPU tensors: torch-op reference); chunked, 16777216 logits per chunk: the full fp32 logits are never made", report);
        Assert.Contains(report, l => l.StartsWith("lora up-projection on cpu: addmm"));

        var off = KernelSelection.For(Cuda, new KernelOptions(DisableCuda: true));
        Assert.Equal(FusedPath.TorchOps, off.Fused.RmsNorm.Path);
        Assert.Contains("adamw on cuda: torch-ops (CUDA kernels disabled by the caller)", off.Report());
        if (cuda.is_available()) return;
        // No usable GPU: every op says why it runs its reference (no silent swap).
        var none = KernelSelection.For(Cuda);
        Assert.All(new FusedOp[] { none.Fused.RmsNorm, none.Fused.Rope, none.Fused.Glu, none.Fused.Dropout, none.Fused.AdamW },
            op => Assert.Equal(FusedPath.TorchOps, op.Path));
        Assert.StartsWith("no usable CUDA device: ", none.Fused.Glu.Reason);
    }

    [Fact]
    public void The_linear_uses_the_path_it_was_given_and_every_path_gives_the_same_bits()
    {
        using var w = randn(24, 128);
        var stored = FourBitWeight.Quantize(w, FourBitType.Nf4, 64, doubleQuant: true);
        using var simd = new FourBitLinear(stored, ScalarType.Float32, KernelSelection.For(CPU));
        using var reference = new FourBitLinear(stored, ScalarType.Float32, KernelSelection.Reference(CPU));
        Assert.Equal(FourBitDequantPath.CpuSimd, simd.DequantPath);
        Assert.Equal(FourBitDequantPath.TorchOps, reference.DequantPath);
        using var x = randn(3, 128);
        using var a = simd.forward(x);
        using var b = reference.forward(x);
        Assert.True(a.eq(b).all().item<bool>());
    }
}
