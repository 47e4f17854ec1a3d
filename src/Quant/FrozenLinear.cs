using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// The seam between a frozen base weight and everything above it (LoRA, merge, the model): a bias-free linear map
/// y = x @ W^T whose weight W [OutFeatures, InFeatures] is stored in some format (dense bf16/fp32, NF4, FP4,
/// int8/int4, ...) and never trained. Implementations hold the stored form only; Forward materialises W in the
/// compute dtype transiently (custom autograd keeps only the stored form for backward).
/// LoRA and merge see nothing but this class.
/// </summary>
public abstract class FrozenLinear : nn.Module<Tensor, Tensor>, IDefersBackwardHandles, ITapedLinear
{
    protected FrozenLinear(string name, long inFeatures, long outFeatures, ScalarType computeDType) : base(name)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        ComputeDType = computeDType;
    }

    public long InFeatures { get; }
    public long OutFeatures { get; }

    /// <summary>The dtype the weight is materialised in for the matmul (bf16 on GPU, fp32 for CPU tests).</summary>
    public ScalarType ComputeDType { get; }

    /// <summary>A short format name for logs and `inspect`: "bf16", "nf4", "nf4-dq", "fp4", "int8", "int4-g64", ...</summary>
    public abstract string FormatName { get; }

    /// <summary>
    /// Where this linear's backward defers the gradient handles it returns (<see cref="QLoraNet.Kernels.BackwardHandles"/>).
    /// A linear starts with a queue of its own; the model it is assembled into points all its linears at the
    /// model's one queue (<see cref="DeferBackwardHandlesTo"/>), which whoever runs backward on the model releases.
    /// </summary>
    public BackwardHandles BackwardHandles { get; private set; } = new();

    /// <summary>Makes backward defer into <paramref name="owner"/> (the queue of the model this linear belongs to).</summary>
    public void DeferBackwardHandlesTo(BackwardHandles owner) => BackwardHandles = owner;

    /// <summary>Bytes held by the stored weight and its quantization state.</summary>
    public abstract long StorageBytes { get; }

    /// <summary>The dense weight [OutFeatures, InFeatures] in <paramref name="dtype"/> (a new tensor; for merge/export).</summary>
    public abstract Tensor DequantizeWeight(ScalarType dtype);

    /// <summary>
    /// The weight as this linear's <see cref="FrozenMatMul"/> multiplies with it (its own product in forward, its
    /// dense form in backward), or null when the linear's backward is something else (quantization-aware training's
    /// round trip) and must go through autograd.
    /// </summary>
    public virtual IQuantizedWeight? MatMulWeight => null;

    /// <summary>Whether <see cref="Record"/> can stand in for autograd through this linear.</summary>
    public bool SupportsTape => MatMulWeight is not null;

    /// <summary>
    /// Forward without autograd, for a backward written out by hand (<see cref="LinearTape"/>): the tape's output is
    /// forward(x), the same arithmetic; <paramref name="keepWeight"/> keeps the dense weight for backward (one
    /// dequantization for both, the weight held until then); without <paramref name="product"/> nothing is computed
    /// now (for a linear whose output backward never reads, like the last one of a checkpointed layer).
    /// </summary>
    /// <param name="x">(..., in)</param>
    public LinearTape Record(Tensor x, bool keepWeight, bool product = true)
    {
        var weight = MatMulWeight ?? throw new InvalidOperationException($"{GetName()} ({FormatName}) has no explicit backward; check SupportsTape");
        if (!product) return new FrozenLinearTape(weight, ComputeDType, null, null);
        if (weight is IQuantizedMatMul || !keepWeight)
        {
            var y = FrozenMatMul.Product(x, weight, ComputeDType);                   // (..., out)
            return new FrozenLinearTape(weight, ComputeDType, y, keepWeight ? weight.Dequantize(ComputeDType) : null);
        }
        var w = weight.Dequantize(ComputeDType);                                     // (out, in)
        return new FrozenLinearTape(weight, ComputeDType, FrozenMatMul.DenseProduct(x, w, ComputeDType), w);
    }

    /// <summary>
    /// Whether <see cref="ForwardAdding"/> folds the add into the product's GEMM for these operands
    /// (<see cref="ResidualProduct.Applies"/>: no autograd graph, a weight multiplied in its dense form, the residual
    /// in the compute dtype and of the output's shape).
    /// </summary>
    /// <param name="x">(..., in)</param>
    /// <param name="residual">(..., out)</param>
    public bool AddsInProduct(Tensor x, Tensor residual) => ResidualProduct.Applies(MatMulWeight, ComputeDType, x, residual);

    /// <summary>
    /// residual + forward(x), without autograd, the add inside the product's GEMM (C = alpha·A·B + beta·C, rounded
    /// once; <see cref="ResidualProduct"/>): a decoder layer's h + down(gated). Only where
    /// <see cref="AddsInProduct"/>; the caller adds after <see cref="nn.Module{T, TResult}.call"/> otherwise.
    /// </summary>
    /// <param name="x">(..., in)</param>
    /// <param name="residual">(..., out)</param>
    /// <returns>(..., out) in the compute dtype.</returns>
    public Tensor ForwardAdding(Tensor x, Tensor residual)
    {
        var weight = CheckAdding(x, residual);
        using var w = weight.Dequantize(ComputeDType);                              // (out, in)
        return ResidualProduct.Dense(x, w, residual, ComputeDType);
    }

    /// <summary>
    /// <see cref="ForwardAdding"/> on a tape: the sum exactly as ForwardAdding makes it (the same dense weight, the
    /// same addmm) and the tape of <see cref="Record"/> for backward, which reads no product; with
    /// <paramref name="keepWeight"/> the tape keeps the dense weight the sum was made with.
    /// </summary>
    /// <param name="x">(..., in)</param>
    /// <param name="residual">(..., out)</param>
    /// <returns>The tape (no output) and the sum (..., out) in the caller's dispose scope.</returns>
    public (LinearTape Tape, Tensor Output) RecordAdding(Tensor x, Tensor residual, bool keepWeight)
    {
        var weight = CheckAdding(x, residual);
        var w = weight.Dequantize(ComputeDType);                                     // (out, in)
        Tensor sum;
        try
        {
            sum = ResidualProduct.Dense(x, w, residual, ComputeDType);              // (..., out)
        }
        catch
        {
            w.Dispose();
            throw;
        }
        if (keepWeight) return (new FrozenLinearTape(weight, ComputeDType, null, w), sum);
        w.Dispose();
        return (new FrozenLinearTape(weight, ComputeDType, null, null), sum);
    }

    IQuantizedWeight CheckAdding(Tensor x, Tensor residual) =>
        AddsInProduct(x, residual) ? MatMulWeight!
            : throw new InvalidOperationException($"{GetName()} ({FormatName}) cannot add the residual in its product here; check AddsInProduct");

    /// <summary>
    /// The stored dtypes are part of the format (fp32 scales, uint8 codes), and the compute dtype is fixed at
    /// construction, so converting a frozen linear to another dtype changes nothing; only device moves apply.
    /// </summary>
    protected override nn.Module _to(ScalarType dtype, bool non_blocking) => this;

    protected override nn.Module _to(Device device, ScalarType dtype, bool non_blocking) =>
        _to(device.type, device.index, non_blocking);

    /// <summary>
    /// Records the device the stored tensors were built on, so that a later .to(device) compares against the truth
    /// (TorchSharp assumes a new module lives on the CPU and skips a move to the CPU otherwise).
    /// </summary>
    protected void AdoptDeviceOf(Tensor stored)
    {
        _deviceType = stored.device_type;
        _deviceIndex = stored.device_type == DeviceType.CUDA ? stored.device_index : -1;
    }
}
