using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// A weight gradient's accumulation, grad += alpha · left @ right, where grad is a trainable fp32 parameter's
/// <c>.grad</c> (LoRA's A and B: the flat gradient buffer's views) and left, right are in the compute dtype (bf16).
/// The reference (<see cref="AddProductReference"/>) is what autograd does: the product rounded to the operands'
/// dtype, then a second kernel adds it, scaled, into fp32. On CUDA the product can be formed in fp32 and added in the
/// GEMM's epilogue instead, cuBLAS's C = alpha · A B + beta · C with an fp32 C (aten::addmm.dtype_out, torch >= 2.8,
/// reached through a one-line TorchScript function because TorchSharp binds no out_dtype): one kernel instead of two,
/// and the product is never rounded to bf16 (Megatron-LM's "gradient accumulation fusion" does the same for its fp32
/// main_grad). A 7B step with LoRA on q/k/v/o makes 256 such accumulations (docs/BENCHMARKS.md): 256 elementwise
/// kernels and their launch gaps gone. Rounding: the fused sum rounds once, in fp32; the reference rounds the product
/// to bf16 first (relative 2^-9), so the two differ by about one bf16 rounding step of the product.
/// Chosen once per device by <see cref="FusedKernels"/> (compiled and probed up front, reported); operands it does
/// not take (not CUDA, grad not fp32 and contiguous, operands not one 16-bit dtype) take the reference, counted.
/// </summary>
public sealed class WeightGradientProduct
{
    const string Script =
        "def add_product(acc: Tensor, left: Tensor, right: Tensor, alpha: float) -> Tensor:\n" +
        "    return torch.addmm(acc, left, right, torch.float32, beta=1.0, alpha=alpha, out=acc)\n";

    readonly jit.CompilationUnit? _unit;
    long _fusedCalls, _referenceCalls;

    WeightGradientProduct(jit.CompilationUnit? unit, string reason)
    {
        _unit = unit;
        Reason = reason;
    }

    /// <summary>The reference everywhere (CPU, or no selection made).</summary>
    public static WeightGradientProduct Reference(string reason = "no selection made: torch-op reference") => new(null, reason);

    /// <summary>
    /// The fp32-output GEMM on <paramref name="device"/> (CUDA), compiled and probed once: throws when libtorch cannot
    /// compile or run it (the caller reports that as the reason for the reference).
    /// </summary>
    public static WeightGradientProduct CompileFor(Device device)
    {
        var path = new WeightGradientProduct(jit.compile(Script), "fp32-output GEMM (aten::addmm.dtype_out through TorchScript)");
        // A probe with small integers, whose products and sums are exact in any order: a libtorch without the
        // overload, or one whose kernel writes the wrong thing, fails here and not mid-run.
        using var scope = NewDisposeScope();
        var acc = full(16, 16, 3f, ScalarType.Float32, device);
        var left = ones(16, 32, ScalarType.BFloat16, device);
        var right = full(32, 16, 2f, ScalarType.BFloat16, device);
        path.AddProduct(acc, left, right, 0.5);
        float got = acc[5, 7].item<float>();
        if (got != 3f + 0.5f * 64f)
            throw new InvalidOperationException($"aten::addmm.dtype_out gave {got} on a probe where {3f + 0.5f * 64f} is exact");
        path._fusedCalls = 0;
        return path;
    }

    /// <summary>Which path operands it takes run on (the other is the reference).</summary>
    public FusedPath Path => _unit is null ? FusedPath.TorchOps : FusedPath.CudaPtx;

    /// <summary>Why this path (for the report).</summary>
    public string Reason { get; }

    /// <summary>Accumulations served by the fused GEMM and by the reference since selection.</summary>
    public (long Fused, long Reference) Calls => (Interlocked.Read(ref _fusedCalls), Interlocked.Read(ref _referenceCalls));

    /// <summary>Whether the fused GEMM takes these operands.</summary>
    public bool Fits(Tensor accumulator, Tensor left, Tensor right) =>
        _unit is not null && accumulator.device_type == DeviceType.CUDA
        && accumulator.dtype == ScalarType.Float32 && accumulator.is_contiguous()
        && left.dtype == right.dtype && left.dtype is ScalarType.BFloat16 or ScalarType.Float16
        && left.dim() == 2 && right.dim() == 2 && accumulator.dim() == 2;

    /// <summary>accumulator += alpha · left @ right, in place.</summary>
    /// <param name="accumulator">(m, n) the fp32 gradient.</param>
    /// <param name="left">(m, k), any strides (a transposed view is read as such).</param>
    /// <param name="right">(k, n), any strides.</param>
    public void AddProduct(Tensor accumulator, Tensor left, Tensor right, double alpha)
    {
        if (left.dim() != 2 || right.dim() != 2 || left.size(1) != right.size(0)
            || accumulator.dim() != 2 || accumulator.size(0) != left.size(0) || accumulator.size(1) != right.size(1))
            throw new ArgumentException($"accumulating a [{string.Join(", ", left.shape)}] @ [{string.Join(", ", right.shape)}] product into [{string.Join(", ", accumulator.shape)}]");
        if (!Fits(accumulator, left, right))
        {
            Interlocked.Increment(ref _referenceCalls);
            AddProductReference(accumulator, left, right, alpha);
            return;
        }
        Interlocked.Increment(ref _fusedCalls);
        // The function returns its out argument: a second handle on the accumulator's storage, released here.
        using var result = (Tensor)_unit!.invoke("add_product", accumulator, left, right, alpha);
    }

    /// <summary>autograd's arithmetic: the product in the operands' dtype, then added, scaled, into the accumulator.</summary>
    public static void AddProductReference(Tensor accumulator, Tensor left, Tensor right, double alpha)
    {
        using var product = left.mm(right);                                                 // (m, n) operand dtype
        accumulator.add_(product, alpha: alpha);                                            // widened to fp32 as it is added
    }
}
