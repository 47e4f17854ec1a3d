using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>The one-line errors for bad quantizer input, shared by every format.</summary>
static class QuantInputChecks
{
    /// <summary>A floating tensor with at least one element.</summary>
    public static void RequireFloat(Tensor weight, string? name)
    {
        if (!weight.is_floating_point())
            throw new ArgumentException($"cannot quantize {What(name)}: dtype {weight.dtype} is not floating point");
        if (weight.numel() == 0)
            throw new ArgumentException($"cannot quantize {What(name)}: it has no elements");
    }

    /// <summary>
    /// Only finite values in <paramref name="reduced"/>: a per-block max/min, where any NaN or Inf of the weight
    /// shows up, so the check reads a few thousand values instead of the whole weight. One bool comes back to the
    /// host; the data stays on its device.
    /// </summary>
    public static void RequireFinite(Tensor reduced, string? name)
    {
        using var finite = reduced.isfinite().all();
        if (!finite.item<bool>())
            throw new ArgumentException($"cannot quantize {What(name)}: it contains NaN or Inf values; fix the checkpoint or skip this tensor");
    }

    static string What(string? name) => name is null ? "weight" : $"tensor '{name}'";

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
