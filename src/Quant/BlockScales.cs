using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// The per-block absmax of a 4-bit weight (one fp32 scale per block of the flattened weight), stored either plain
/// or double-quantized (QLoRA section 3, "Double Quantization").
/// </summary>
public abstract record BlockScales
{
    /// <summary>Number of blocks (= number of scales).</summary>
    public abstract long Count { get; }

    /// <summary>The fp32 scales (Count), on the storage device.</summary>
    public abstract Tensor Dequantize();

    /// <summary>Bytes held in memory for the scales (shared code tables not counted).</summary>
    public abstract long StorageBytes { get; }

    public abstract BlockScales To(Device device);

    /// <summary>The storage tensors, for callers that keep them as module buffers.</summary>
    public abstract IEnumerable<Tensor> Tensors { get; }
}

/// <summary>The scales kept as fp32: 32 bits per block (0.5 bits per weight at blocksize 64).</summary>
/// <param name="Absmax">fp32 (nBlocks).</param>
public sealed record PlainScales(Tensor Absmax) : BlockScales
{
    public override long Count => Absmax.shape[0];
    public override Tensor Dequantize() => Absmax;
    public override long StorageBytes => 4 * Count;
    public override BlockScales To(Device device) => new PlainScales(Absmax.to(device));
    public override IEnumerable<Tensor> Tensors => [Absmax];
}
