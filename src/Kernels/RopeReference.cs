using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// Rotary position embedding (Su et al. 2021) in Hugging Face's rotate_half layout, in torch ops: the reference the
/// fused kernel (Cuda/rope.cu) equals bit for bit. Forward is HF's apply_rotary_pos_emb for one tensor,
///   y = x * cos + rotate_half(x) * sin,   rotate_half([x1, x2]) = [-x2, x1]   (halves of the last dimension),
/// each op rounding to x's dtype. Backward, the transpose, in autograd's roundings:
///   dx = dy * cos + rotate_half^T(dy * sin),   rotate_half^T([a1, a2]) = [a2, -a1].
/// </summary>
public static class RopeReference
{
    /// <param name="x">(B, heads, T, D)</param>
    /// <param name="cos">(B, T, D), x's dtype</param>
    /// <param name="sin">(B, T, D)</param>
    public static Tensor Forward(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long half = x.shape[^1] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        var rotated = cat([-x2, x1], dim: -1);
        var c = cos.unsqueeze(1);                                  // (B, 1, T, D): broadcast over heads
        var s = sin.unsqueeze(1);
        return (x * c + rotated * s).MoveToOuterDisposeScope();
    }

    /// <param name="dy">(B, heads, T, D) gradient of the rotated tensor.</param>
    /// <returns>(B, heads, T, D) gradient of x.</returns>
    public static Tensor Backward(Tensor dy, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long half = dy.shape[^1] / 2;
        var c = cos.unsqueeze(1);
        var s = sin.unsqueeze(1);
        var ds = dy * s;
        var transposed = cat([ds.narrow(-1, half, half), -ds.narrow(-1, 0, half)], dim: -1);
        return (dy * c + transposed).MoveToOuterDisposeScope();
    }
}
