using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// The row permutation llama.cpp's HF converter applies to q_proj and k_proj (convert_hf_to_gguf.py,
/// LlamaModel.permute). Hugging Face's Llama rotates the two halves of each head's dims against each other
/// (rotate_half: dim i pairs with i + headDim/2); llama.cpp's <c>llama</c> architecture rotates adjacent pairs
/// (2i, 2i + 1), the layout of Meta's original checkpoints. Reordering each head's output rows from
/// [first half..., second half...] to [h0, s0, h1, s1, ...] makes both compute the same attention:
/// <code>
///   W (nHeads * headDim, in) -> view (nHeads, 2, headDim/2, in) -> swap dims 1, 2 -> reshape back
/// </code>
/// q uses the number of attention heads, k the number of key/value heads (GQA).
/// </summary>
public static class GgufRopePermutation
{
    public static Tensor Permute(Tensor weight, int nHeads)
    {
        long rows = weight.shape[0];
        if (rows % (2 * nHeads) != 0)
            throw new ArgumentException($"a weight with {rows} rows cannot be split into {nHeads} heads of an even size");
        var rest = weight.shape.Skip(1).ToArray();
        var view = new long[] { nHeads, 2, rows / nHeads / 2 }.Concat(rest).ToArray();   // (nHeads, 2, headDim/2, in)
        return weight.reshape(view).transpose(1, 2).reshape(weight.shape);
    }
}
