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
public abstract class FrozenLinear : nn.Module<Tensor, Tensor>, IDefersBackwardHandles
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
