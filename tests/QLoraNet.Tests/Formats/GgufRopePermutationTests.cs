using QLoraNet.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Formats;

[Trait("tier", "parity")]
public class GgufRopePermutationTests
{
    [Fact]
    public void Rows_of_each_head_interleave_its_two_halves()
    {
        // 2 heads of dim 4: head rows [h0 h1 | h2 h3] become [h0 h2 h1 h3]
        var w = arange(8).to(ScalarType.Float32).reshape(8, 1);
        var p = GgufRopePermutation.Permute(w, nHeads: 2);
        Assert.Equal(new float[] { 0, 2, 1, 3, 4, 6, 5, 7 }, p.data<float>().ToArray());
        Assert.Equal(new long[] { 8, 1 }, p.shape);
    }

    [Fact]
    public void K_uses_the_key_value_head_count()
    {
        var w = arange(16).to(ScalarType.Float32).reshape(8, 2);      // 1 kv head of dim 8, 2 input columns
        var p = GgufRopePermutation.Permute(w, nHeads: 1);
        // rows [0 1 2 3 | 4 5 6 7] -> [0 4 1 5 2 6 3 7]
        Assert.Equal(new float[] { 0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15 }, p.data<float>().ToArray());
    }

    [Fact]
    public void Interleaved_rope_on_permuted_rows_equals_rotate_half_rope_on_the_original()
    {
        // HF Llama: q' = q*cos + rotate_half(q)*sin with dims i and i + d/2 sharing frequency i.
        // llama.cpp (LLAMA_ROPE_TYPE_NORM): dims 2i and 2i + 1 rotate together with frequency i.
        using var rng = new Generator(1);
        int nHeads = 3, headDim = 8, inDim = 5;
        double theta = 10000;
        var w = randn(nHeads * headDim, inDim, dtype: ScalarType.Float64, generator: rng);
        var x = randn(inDim, dtype: ScalarType.Float64, generator: rng);
        int pos = 7;
        var freqs = Enumerable.Range(0, headDim / 2).Select(i => pos * Math.Pow(theta, -2.0 * i / headDim)).ToArray();

        var q = matmul(w, x).data<double>().ToArray();                                   // (nHeads * headDim)
        var qp = matmul(GgufRopePermutation.Permute(w, nHeads), x).data<double>().ToArray();
        var hf = new double[q.Length];
        var cpp = new double[q.Length];
        for (int h = 0; h < nHeads; h++)
            for (int i = 0; i < headDim / 2; i++)
            {
                double c = Math.Cos(freqs[i]), s = Math.Sin(freqs[i]);
                int o = h * headDim;
                double a = q[o + i], b = q[o + i + headDim / 2];
                hf[o + i] = a * c - b * s;
                hf[o + i + headDim / 2] = b * c + a * s;
                double a2 = qp[o + 2 * i], b2 = qp[o + 2 * i + 1];
                cpp[o + 2 * i] = a2 * c - b2 * s;
                cpp[o + 2 * i + 1] = a2 * s + b2 * c;
            }
        // Same rotated vector up to the same reordering, so attention scores q·k are identical.
        var hfReordered = GgufRopePermutation.Permute(tensor(hf).reshape(nHeads * headDim, 1), nHeads).reshape(-1);
        Assert.True(allclose(hfReordered, tensor(cpp), rtol: 1e-12, atol: 1e-12));
        Assert.False(allclose(tensor(hf), tensor(cpp), rtol: 1e-3, atol: 1e-3));     // without the permutation they differ
    }
}
