using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Quant;

/// <summary>
/// How the ternary CUDA kernel is chosen: only after loading and passing its self-check against torch ops, else torch
/// ops with the reason. No GPU here, so the decision runs with stand-in kernels (the CPU SIMD loop, and the same loop
/// broken the ways a CUDA kernel's indexing could break) through the same self-check the device runs.
/// </summary>
[Trait("tier", "unit")]
public class TernaryKernelSelectionTests
{
    // torch.CUDA would initialise the CUDA backend, which throws on a CPU-only machine; the selection must not.
    static readonly Device Cuda = new(DeviceType.CUDA, 0);

    /// <summary>A kernel as the selection sees it: something that sums codes against packed weights.</summary>
    sealed record FakeKernel(Func<Tensor, Tensor, Tensor> Sums);

    static readonly FakeKernel Correct = new(CpuTernaryKernel.Multiply);

    /// <summary>The correct sums with the elements where <paramref name="wrong"/>(n, k, m, t, o) holds off by one.</summary>
    static FakeKernel Broken(Func<long, long, long, long, long, bool> wrong) => new((codes, packed) =>
    {
        var c = CpuTernaryKernel.Multiply(codes, packed);
        long n = c.shape[0], m = c.shape[1], k = codes.shape[1];
        for (long t = 0; t < n; t++)
            for (long o = 0; o < m; o++)
                if (wrong(n, k, m, t, o)) c[t, o] = c[t, o] + 1;
        return c;
    });

    static (TernaryMatMulPath Path, string Reason, FakeKernel? Kernel) Choose(FakeKernel kernel) =>
        KernelSelection.ChooseTernaryKernel(() => kernel, f => TernaryKernelSelfCheck.Run(CPU, f.Sums), _ => "chosen");

    [Fact]
    public void A_kernel_equal_to_torch_ops_on_the_self_check_is_chosen()
    {
        var (path, reason, kernel) = Choose(Correct);
        Assert.Equal(TernaryMatMulPath.Cuda, path);
        Assert.Equal("chosen", reason);
        Assert.Same(Correct, kernel);
    }

    public static TheoryData<string, Func<long, long, long, long, long, bool>> Breakages() => new()
    {
        // the byte path (k % 4 != 0) wrong everywhere
        { "k=37", (n, k, m, t, o) => k % 4 != 0 },
        // the last, partial group of 8 tokens (n = 13: tokens 8..12) never written or summed wrong
        { "first at [8, 0]", (n, k, m, t, o) => n % 8 != 0 && t >= n / 8 * 8 && k % 4 == 0 },
        // the last, partial block of 4 packed rows (m/4 = 5: packed row 4, outputs 4, 9, 14, 19)
        { "first at [0, 4]", (n, k, m, t, o) => o % (m / 4) == 4 && k % 4 == 0 },
        // the single-token, single-word problem only
        { "n=1 k=4 m=4", (n, k, m, t, o) => n == 1 },
    };

    [Theory]
    [MemberData(nameof(Breakages))]
    public void A_kernel_wrong_anywhere_in_the_self_check_keeps_torch_ops_and_says_where(string where, Func<long, long, long, long, long, bool> wrong)
    {
        var (path, reason, kernel) = Choose(Broken(wrong));
        Assert.Equal(TernaryMatMulPath.TorchOps, path);
        Assert.Null(kernel);
        Assert.StartsWith("the ternary kernel failed its self-check on the device (n=", reason);
        Assert.Contains(where, reason);
        Assert.EndsWith(": unpack and matmul the integer codes", reason);
        Assert.DoesNotContain("\n", reason);
    }

    [Fact]
    public void A_kernel_that_fails_to_load_or_throws_in_its_self_check_keeps_torch_ops_with_the_error()
    {
        var (path, reason, _) = KernelSelection.ChooseTernaryKernel<FakeKernel>(
            () => throw new InvalidOperationException("CUDA driver call cuModuleLoadData failed: 218 (a PTX JIT compilation failed)\nmore"),
            f => TernaryKernelSelfCheck.Run(CPU, f.Sums), _ => "chosen");
        Assert.Equal(TernaryMatMulPath.TorchOps, path);
        Assert.Equal("the ternary kernel failed to load (CUDA driver call cuModuleLoadData failed: 218 (a PTX JIT compilation failed)): unpack and matmul the integer codes", reason);

        var faulting = new FakeKernel((_, _) => throw new InvalidOperationException("CUDA error: an illegal memory access was encountered"));
        (path, reason, _) = Choose(faulting);
        Assert.Equal(TernaryMatMulPath.TorchOps, path);
        Assert.Equal("the ternary kernel failed its self-check on the device (InvalidOperationException: CUDA error: an illegal memory access was encountered): unpack and matmul the integer codes", reason);

        var wrongShape = new FakeKernel((codes, packed) => CpuTernaryKernel.Multiply(codes, packed).to(ScalarType.Float32));
        (path, reason, _) = Choose(wrongShape);
        Assert.Equal(TernaryMatMulPath.TorchOps, path);
        Assert.Contains("got Float32 [13, 20], expected Int32 [13, 20]", reason);
    }

    [Fact]
    public void The_self_check_reaches_every_branch_of_the_kernel()
    {
        var problems = TernaryKernelSelfCheck.Problems;
        Assert.Contains(problems, p => p.K % 4 == 0 && p.K > 128 && p.K % 128 != 0);          // 32-bit path, partial last step
        Assert.Contains(problems, p => p.K % 4 != 0 && p.K > 32 && p.K % 32 != 0);            // byte path, partial last step
        Assert.Contains(problems, p => p.N % TernaryCudaKernel.Tokens != 0 && p.N > TernaryCudaKernel.Tokens);
        Assert.Contains(problems, p => p.Quarter % TernaryCudaKernel.Warps != 0 && p.Quarter > TernaryCudaKernel.Warps);
    }

    [Fact]
    public void On_a_machine_without_a_usable_gpu_the_cuda_selection_reports_why_the_ternary_product_runs_torch_ops()
    {
        var off = KernelSelection.For(Cuda, new KernelOptions(DisableCuda: true));
        Assert.Equal(TernaryMatMulPath.TorchOps, off.TernaryPath);
        Assert.Contains("ternary matmul on cuda: torch-ops (CUDA kernels disabled by the caller: unpack and matmul the integer codes)", off.Report());

        Assert.Equal(TernaryMatMulPath.CpuSimd, KernelSelection.For(CPU).TernaryPath);   // the CPU default is unchanged
        Assert.Null(KernelSelection.For(CPU).TernaryCuda);
        if (cuda.is_available()) return;
        var none = KernelSelection.For(Cuda);
        Assert.Equal(TernaryMatMulPath.TorchOps, none.TernaryPath);
        Assert.Null(none.TernaryCuda);
        Assert.StartsWith("the ternary kernel failed to load (", none.TernaryReason);
        Assert.Single(none.Report(), l => l.StartsWith("ternary matmul on cuda: torch-ops (the ternary kernel failed to load (") && !l.Contains('\n'));
    }

    [Fact]
    public void The_cuda_path_without_its_kernel_and_the_kernel_outside_its_contract_are_errors_naming_the_problem()
    {
        using var q = randint(-1, 2, [8, 12]).to(ScalarType.Float32);
        var w = new TernaryWeight(TernaryWeight.Pack(q), tensor(new[] { 1f }).to(ScalarType.BFloat16), [8, 12], ScalarType.Float32);
        using var codes = randint(-128, 128, [3, 12]).to(ScalarType.Float32);
        var e = Assert.Throws<ArgumentException>(() => TernaryMatMul.Sums(codes, w, TernaryMatMulPath.Cuda));
        Assert.Contains("needs its loaded kernel", e.Message);

        using var i8 = codes.to(ScalarType.Int8);
        using var packed = w.Packed;
        Assert.Equal("codes are Float32, not Int8", TernaryCudaKernel.Unsupported(codes, packed, 0));
        Assert.Equal("packed weights are Int8, not Byte (uint8)", TernaryCudaKernel.Unsupported(i8, i8, 0));
        Assert.Equal("codes have 12 inputs, packed weights 6", TernaryCudaKernel.Unsupported(i8, packed.narrow(1, 0, 6), 0));
        Assert.StartsWith("codes [12] and packed [2, 12] must both be 2-D", TernaryCudaKernel.Unsupported(i8[0], packed, 0));
        Assert.Equal("codes and packed weights must be contiguous", TernaryCudaKernel.Unsupported(i8.t().contiguous().t(), packed, 0));
        Assert.Equal("codes on cpu, packed weights on cpu: the kernel was loaded for cuda:0", TernaryCudaKernel.Unsupported(i8, packed, 0));
    }
}
