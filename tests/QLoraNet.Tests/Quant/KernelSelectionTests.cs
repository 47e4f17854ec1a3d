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
        var failed = KernelSelection.For(Cuda, new KernelOptions(PtxPath: "/nonexistent/nf4_dequant.ptx"));
        Assert.Equal(FourBitDequantPath.TorchOps, failed.FourBitDequant);
        Assert.StartsWith("the fused kernel failed to load: ", failed.FourBitDequantReason);
        Assert.DoesNotContain("\n", failed.Report()[0]);
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
