using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// LoRA's factor gradients added into their fp32 <c>.grad</c> inside the GEMM that makes them, from 16-bit operands:
///
///     grad (fp32) += alpha · P Q        P (m, k), Q (k, n) in the compute dtype (bf16/fp16), accumulated in fp32
///
/// (dB = scaling · dyᵀ down, dA = scaling · (dy B)ᵀ h; Hu et al. 2021's A and B, the gradients their tapes write out,
/// Peft.LoraLinearTape). Megatron-LM's "gradient accumulation fusion" (Narayanan et al. 2021, §4) for the weight
/// gradients of a frozen-base adapter: cuBLAS's GEMM with bf16 inputs and an fp32 C and beta = 1
/// (<see cref="Cublas"/>) reads the fp32 gradient in its epilogue. The reference (<see cref="AddProductReference"/>,
/// what autograd does) makes the product in the compute dtype, rounding it, and then adds it into the fp32 gradient in
/// a second kernel: on a 7B step with LoRA on q/k/v/o on an H200, 256 adds of 4.6 µs, each with a launch gap, and
/// a bf16 temporary per gradient (issue 13, docs/BENCHMARKS.md session 32).
/// Rounding: the fused sum is rounded once, to fp32; the reference rounds the product to the compute dtype first
/// (a relative error of up to 2⁻⁸ per entry in bf16), so the fused gradient is the more accurate one; they agree within
/// that rounding (<c>WeightGradientTests</c>, `bench kernel` on the device).
/// Where the operands do not fit (CPU tensors, fp32 operands, strides cuBLAS cannot read, no cuBLAS) the reference
/// runs, and the tally says so (<see cref="FusedOp.Calls"/>).
/// </summary>
public sealed class FusedWeightGradient : FusedOp
{
    readonly Cublas? _cublas;

    /// <param name="cublas">the loaded library, or null: every call runs the reference.</param>
    /// <param name="reason">why this path (for the report).</param>
    public FusedWeightGradient(Cublas? cublas, string reason) : base(null, reason) => _cublas = cublas;

    public override FusedPath Path => _cublas is null ? FusedPath.TorchOps : FusedPath.Cublas;

    /// <summary>grad += alpha · p q, in the GEMM where the tensors fit it, else <see cref="AddProductReference"/>.</summary>
    /// <param name="grad">(m, n) fp32, contiguous: a parameter's gradient (a view of the run's flat buffer).</param>
    /// <param name="p">(m, k) in the compute dtype, row- or column-major (a transposed view reads in place).</param>
    /// <param name="q">(k, n) in the compute dtype, likewise.</param>
    public void AddProduct(Tensor grad, Tensor p, Tensor q, double alpha)
    {
        if (Fits(grad, p, q) is { } fit)
        {
            _cublas!.Gemm(fit.Device, grad.size(0), grad.size(1), p.size(1), (float)alpha, fit.P, fit.Q, fit.InputType,
                beta: 1f, CudaDriver.DataPointer(grad), grad.stride(0));
            CountKernel();
            return;
        }
        CountReference();
        AddProductReference(grad, p, q, alpha);
    }

    /// <summary>
    /// grads[i] += alpha · (rows i of p) q for row blocks of <paramref name="p"/> (Σrᵢ, k) taken in order, each block
    /// as many rows as its gradient: the A gradients of adapters sharing one input (Peft.SharedLoraDownTape, dA = Gᵀ h).
    /// One batched GEMM where the blocks are equal and their gradients equally spaced in memory (a flat gradient
    /// buffer's q, k, v A's, B's between them); otherwise the reference: the whole product once, then an add per block.
    /// </summary>
    /// <param name="grads">(rᵢ, n) fp32 contiguous each.</param>
    /// <param name="p">(Σrᵢ, k) in the compute dtype.</param>
    /// <param name="q">(k, n) in the compute dtype.</param>
    public void AddProducts(IReadOnlyList<Tensor> grads, Tensor p, Tensor q, double alpha)
    {
        if (grads.Count == 1)
        {
            AddProduct(grads[0], p, q, alpha);
            return;
        }
        if (Fits(grads[0], p, q, rows: grads[0].size(0)) is { } fit && EquallySpaced(grads, p) is long strideC)
        {
            long r = grads[0].size(0);
            // Block i of p starts r rows further: r elements in a column-major p (a transposed view), r · ld in a row-major one.
            long strideP = fit.P.Transposed ? r : r * fit.P.Ld;
            _cublas!.Gemm(fit.Device, r, grads[0].size(1), p.size(1), (float)alpha, fit.P, fit.Q, fit.InputType,
                beta: 1f, CudaDriver.DataPointer(grads[0]), grads[0].stride(0), batch: grads.Count, strideP: strideP, strideQ: 0, strideC: strideC);
            CountKernel();
            return;
        }
        CountReference();
        AddProductsReference(grads, p, q, alpha);
    }

    /// <summary>
    /// The one-time check cuBLAS passes on <paramref name="device"/> before a run uses it (<see cref="FusedKernels.Load"/>),
    /// as the ternary kernel passes its own: a single product with a transposed operand and a column block (dB's
    /// layouts) and a batched one into equally spaced gradients with another gradient between them (the shared dA's),
    /// each added into a nonzero fp32 gradient. Operands are multiples of 1/4 below 2 in magnitude over k = 64, so
    /// every product, partial sum and sum is exact in fp32, in any summation order: the result must equal the fp64 one
    /// exactly. Null when both do; else why not (a wrong value, or the call's error), and the run keeps the reference.
    /// </summary>
    public string? SelfCheck(Device device)
    {
        if (_cublas is null) return "no cuBLAS";
        try
        {
            if (CheckSums(device, AddProduct, AddProducts) is { } wrong) return wrong;
            return Calls.Reference == 0 ? null : "the self-check's operands did not take the cuBLAS path";
        }
        catch (Exception e)
        {
            return $"cuBLAS failed its self-check: {e.Message.Split('\n')[0].Trim()}";
        }
    }

    /// <summary><see cref="SelfCheck"/>'s problems run through <paramref name="single"/> (<see cref="AddProduct"/>'s
    /// contract) and <paramref name="batched"/> (<see cref="AddProducts"/>'s) on <paramref name="device"/>: null when
    /// every sum is exact, else the largest difference.</summary>
    internal static string? CheckSums(Device device, Action<Tensor, Tensor, Tensor, double> single,
        Action<IReadOnlyList<Tensor>, Tensor, Tensor, double> batched)
    {
        using var scope = NewDisposeScope();
        const long k = 64, r = 8, n = 40;
        Tensor Quarters(long rows, long cols, int seed) =>                                       // multiples of 1/4, |x| <= 1.5
            arange(rows * cols, ScalarType.Float32, device).mul_(seed).remainder_(13).sub_(6).div_(4).view(rows, cols);
        var dy = Quarters(k, n, 3).to(ScalarType.BFloat16);                                      // (k, n)
        var down = Quarters(k, 3 * r, 5).to(ScalarType.BFloat16);                                // (k, 3r): a column block is strided
        var h = Quarters(k, n, 7).to(ScalarType.BFloat16);                                       // (k, n)
        var flat = Quarters(1, 3 * 2 * r * n, 11).view(-1);                                      // six (r, n) gradients: A, B, A, B, A, B
        var expected = flat.to(ScalarType.Float64);
        Tensor Slot(Tensor f, int i) => f.narrow(0, i * r * n, r * n).view(r, n);
        Tensor D(Tensor t) => t.to(ScalarType.Float64);
        // Single, with a transposed column block as P (dB's layout): slot 1 += 2 · (down's columns r..2r)ᵀ dy.
        single(Slot(flat, 1), down.narrow(1, r, r).t(), dy, 2.0);
        Slot(expected, 1).add_(D(down.narrow(1, r, r).t()).mm(D(dy)), alpha: 2.0);
        // Batched (the shared dA's layout): slots 0, 2, 4, equally spaced with 1, 3, 5 between, += row blocks of downᵀ h.
        batched([Slot(flat, 0), Slot(flat, 2), Slot(flat, 4)], down.t(), h, 1.0);
        var blocks = D(down.t()).mm(D(h));                                                       // (3r, n)
        for (int i = 0; i < 3; i++) Slot(expected, 2 * i).add_(blocks.narrow(0, i * r, r));
        var difference = (D(flat) - expected).abs().max().item<double>();
        return difference == 0 ? null : $"cuBLAS's sums differ from the exact ones by up to {difference:G3} on this device";
    }

    /// <summary>What autograd does: the product in the operands' dtype, then added into the gradient.</summary>
    public static void AddProductReference(Tensor grad, Tensor p, Tensor q, double alpha)
    {
        using var product = p.mm(q);                                                     // (m, n), rounded to the operands' dtype
        grad.add_(product, alpha: alpha);
    }

    /// <summary><see cref="AddProducts"/>'s reference: one product for all blocks, then each block added.</summary>
    public static void AddProductsReference(IReadOnlyList<Tensor> grads, Tensor p, Tensor q, double alpha)
    {
        using var product = p.mm(q);                                                     // (Σr, n)
        long offset = 0;
        foreach (var g in grads)
        {
            long r = g.size(0);
            using var block = product.narrow(0, offset, r);
            g.add_(block, alpha: alpha);
            offset += r;
        }
    }

    readonly record struct Fit(int Device, Cublas.Operand P, Cublas.Operand Q, int InputType);

    /// <summary>How cuBLAS takes these operands, or null where it cannot (then the reference runs).</summary>
    /// <param name="rows">rows of the first block of p (a batched call): p's own rows when null.</param>
    Fit? Fits(Tensor grad, Tensor p, Tensor q, long? rows = null)
    {
        if (_cublas is null || grad.device_type != DeviceType.CUDA || p.device_type != DeviceType.CUDA || q.device_type != DeviceType.CUDA) return null;
        if (grad.dtype != ScalarType.Float32 || p.dtype != q.dtype || Cublas.InputType(p.dtype) is not int inputType) return null;
        int device = grad.device_index;
        if (p.device_index != device || q.device_index != device) return null;
        if (grad.dim() != 2 || p.dim() != 2 || q.dim() != 2 || !grad.is_contiguous()) return null;
        long m = rows ?? p.size(0);
        if (grad.size(0) != m || p.size(1) != q.size(0) || grad.size(1) != q.size(1)) return null;
        if (Math.Max(Math.Max(p.size(0), p.size(1)), q.size(1)) > int.MaxValue) return null;
        // p itself describes its first block (same first element, same strides): no view made per call on this hot path.
        if (Cublas.AsTransposed(p) is not { } pOp || Cublas.AsTransposed(q) is not { } qOp) return null;
        return new Fit(device, pOp, qOp, inputType);
    }

    /// <summary>The element distance between consecutive gradients when all are equally shaped, contiguous, fp32 and
    /// equally spaced (forward, without overlap), and p has one block per gradient; else null.</summary>
    static long? EquallySpaced(IReadOnlyList<Tensor> grads, Tensor p)
    {
        long r = grads[0].size(0), n = grads[0].size(1);
        if (p.size(0) != r * grads.Count) return null;
        long? stride = null;
        long previous = (long)CudaDriver.DataPointer(grads[0]);
        for (int i = 1; i < grads.Count; i++)
        {
            var g = grads[i];
            if (g.dtype != ScalarType.Float32 || g.dim() != 2 || g.size(0) != r || g.size(1) != n || !g.is_contiguous()
                || g.device_type != grads[0].device_type || g.device_index != grads[0].device_index) return null;
            long at = (long)CudaDriver.DataPointer(g), bytes = at - previous;
            if (bytes <= 0 || bytes % 4 != 0 || bytes / 4 < r * n || (stride is long s && s != bytes / 4)) return null;
            stride = bytes / 4;
            previous = at;
        }
        return stride;
    }
}
