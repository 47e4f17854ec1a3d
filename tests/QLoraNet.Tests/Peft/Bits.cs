using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>Bit-for-bit tensor comparison (TorchSharp's Tensor.equal is the elementwise eq).</summary>
public static class Bits
{
    public static bool Same(Tensor a, Tensor b)
    {
        if (a.dtype != b.dtype || !a.shape.SequenceEqual(b.shape)) return false;
        using var ca = a.detach().cpu().contiguous();
        using var cb = b.detach().cpu().contiguous();
        return ca.bytes.SequenceEqual(cb.bytes);
    }
}
