using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>The one-line errors for bad quantizer input, shared by every format.</summary>
static class QuantInputChecks
{
    /// <summary>A floating tensor with at least one element and only finite values.</summary>
    public static void RequireFiniteFloat(Tensor weight, string? name)
    {
        string what = name is null ? "weight" : $"tensor '{name}'";
        if (!weight.is_floating_point())
            throw new ArgumentException($"cannot quantize {what}: dtype {weight.dtype} is not floating point");
        if (weight.numel() == 0)
            throw new ArgumentException($"cannot quantize {what}: it has no elements");
        // One scalar comes back to the host; the data stays on its device.
        using var finite = weight.isfinite().all();
        if (!finite.item<bool>())
            throw new ArgumentException($"cannot quantize {what}: it contains NaN or Inf values; fix the checkpoint or skip this tensor");
    }

    /// <summary>A power of two, at least 2 (two codes share a byte), at most the number of elements.</summary>
    public static void RequireBlockSize(int blockSize, long numel, string? name, string what = "blocksize")
    {
        string of = name is null ? "" : $" for tensor '{name}'";
        if (blockSize < 2 || (blockSize & (blockSize - 1)) != 0)
            throw new ArgumentException($"{what} {blockSize}{of} is not a power of two >= 2; use e.g. 64");
        if (blockSize > numel)
            throw new ArgumentException($"{what} {blockSize}{of} is larger than the tensor ({numel} elements); use a smaller {what}");
    }

    public static long Numel(long[] shape) => shape.Aggregate(1L, (a, b) => a * b);

    public static long CeilDiv(long a, long b) => (a + b - 1) / b;
}
