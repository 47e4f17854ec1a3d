using System.Text.Json.Nodes;
using QLoraNet.Quant;
using QLoraNet.Quant.Gptq;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Quant.QuantTestData;

namespace QLoraNet.Tests.Quant;

/// <summary>GPTQ's fast solver (Cholesky factor, lazy blocks) against the slow reference of the algorithm (explicit
/// inverse Hessian downdated column by column, no blocks), its stored layout, and its bad inputs.</summary>
[Trait("tier", "unit")]
public class GptqTests
{
    const int Rows = 6, Columns = 32, Tokens = 80;

    /// <summary>W (rows, cols) fp64 and H = 2 X^T X / tokens (cols, cols) fp64 from seeded normals; input column 5
    /// is always zero (a dead input: H_55 = 0), and column scales differ so act-order permutes.</summary>
    static (double[] W, double[] H) Problem(int seed)
    {
        var w = Normal(Rows * Columns, seed).Select(v => (double)v).ToArray();
        var x = Normal(Tokens * Columns, seed + 1).Select(v => (double)v).ToArray();
        for (int t = 0; t < Tokens; t++)
            for (int c = 0; c < Columns; c++)
                x[t * Columns + c] = c == 5 ? 0 : x[t * Columns + c] * (1 + c % 7);
        var h = new double[Columns * Columns];
        for (int i = 0; i < Columns; i++)
            for (int j = 0; j < Columns; j++)
            {
                double s = 0;
                for (int t = 0; t < Tokens; t++) s += x[t * Columns + i] * x[t * Columns + j];
                h[i * Columns + j] = 2 * s / Tokens;
            }
        return (w, h);
    }

    [Theory]
    [InlineData("gptq4-g8", 8)]        // groups inside lazy blocks of 8, four blocks: the cross-block update runs
    [InlineData("gptq4-g8-act", 16)]   // act-order: columns permuted by H_jj, g_idx a permutation of i / 8
    [InlineData("gptq3", 128)]         // per output row, one block
    [InlineData("gptq2-g16", 8)]
    public void Solver_matches_the_slow_reference_of_the_algorithm(string spelling, int blockSize)
    {
        var format = (GptqFormat)BaseFormat.Parse(spelling);
        var (w, h) = Problem(7);
        var expected = GptqReference.Quantize(w, Rows, Columns, h, format, blockSize: blockSize);
        using var W = tensor(w, ScalarType.Float64).reshape(Rows, Columns);
        using var H = tensor(h, ScalarType.Float64).reshape(Columns, Columns);
        using var actual = GptqSolver.Solve(W, H, format, blockSize: blockSize);

        // Both paths are fp64; they differ only in how H^-1 is factored (Cholesky vs Gauss-Jordan and rank-one
        // downdates), a relative difference of order cond(H)·n·eps ≈ 1e3·32·2.2e-16 < 1e-11 on this H. A code can
        // only differ when w/scale lies within that of a rounding boundary, which these seeded values do not.
        Assert.Equal(expected.Codes, actual.Codes.data<long>().ToArray());
        Assert.Equal(expected.GIdx, actual.GIdx.data<long>().ToArray());
        var scales = actual.Scales.contiguous().data<double>().ToArray();
        for (int i = 0; i < scales.Length; i++) Assert.Equal(expected.Scales[i], scales[i], 1e-9 * Math.Abs(expected.Scales[i]));
        Assert.Equal(expected.Zeros, actual.Zeros.contiguous().data<double>().ToArray());
        if (format.ActOrder) Assert.NotEqual(Enumerable.Range(0, Columns).Select(i => (long)(i / 8)), expected.GIdx);
    }

    [Theory]
    [InlineData("gptq4-g16", ScalarType.Float32)]
    [InlineData("gptq4-g16-act", ScalarType.Float32)]
    [InlineData("gptq3-g48", ScalarType.Float32)]      // groups of 48 straddle lazy blocks of 32
    [InlineData("gptq2-act", ScalarType.Float32)]      // per output row, act-order
    [InlineData("gptq8-g32", ScalarType.Float64)]
    [InlineData("gptq4-g16-act", ScalarType.Float64)]
    public void Host_column_loop_gives_the_bits_of_the_torch_op_loop(string spelling, ScalarType dtype)
    {
        // The CPU path runs each lazy block's column steps in a host loop; the device path in torch ops. Both must
        // give the same bits (same IEEE operations on the same operands), on a weight and Hessian larger than one
        // block, with a dead input and unequal column scales so act-order permutes.
        const int rows = 40, columns = 96, tokens = 200;
        var format = (GptqFormat)BaseFormat.Parse(spelling);
        using var scope = NewDisposeScope();
        var W = tensor(Normal(rows * columns, 21), [rows, columns]).to(dtype);
        var colScale = arange(columns, ScalarType.Float32).remainder(5).add_(1);
        colScale[9].fill_(0);                                                           // a dead input
        var X = tensor(Normal(tokens * columns, 22), [tokens, columns]).mul_(colScale).to(dtype);
        var H = X.t().matmul(X).mul_(2.0 / tokens);
        using var host = GptqSolver.Solve(W, H, format, GptqSolver.DefaultPercDamp, 32, null, columnsOnHost: true);
        using var ops = GptqSolver.Solve(W, H, format, GptqSolver.DefaultPercDamp, 32, null, columnsOnHost: false);
        static long[] Longs(Tensor t) => t.to(ScalarType.Int64).contiguous().data<long>().ToArray();
        static double[] Doubles(Tensor t) => t.to(ScalarType.Float64).contiguous().data<double>().ToArray();   // exact from fp32
        Assert.Equal(Longs(ops.Codes), Longs(host.Codes));
        Assert.Equal(Doubles(ops.Scales), Doubles(host.Scales));
        Assert.Equal(Doubles(ops.Zeros), Doubles(host.Zeros));
        Assert.Equal(Longs(ops.GIdx), Longs(host.GIdx));
        // Not a vacuous comparison: the codes span the whole grid.
        Assert.Equal(format.MaxQ, host.Codes.max().item<long>());
        Assert.Equal(0, host.Codes.min().item<long>());
    }

    [Fact]
    public void Error_compensation_beats_round_to_nearest_on_the_calibration_inputs()
    {
        // GPTQ minimises ||W X - Q X||² over the calibration inputs; with the same grids, plain rounding of each
        // column cannot do better in the Hessian norm tr((W-Q) H (W-Q)^T) except by chance; on 6 x 32 with
        // these inputs GPTQ's error is well below RTN's.
        var format = (GptqFormat)BaseFormat.Parse("gptq4-g8");
        var (w, h) = Problem(11);
        using var W = tensor(w, ScalarType.Float64).reshape(Rows, Columns);
        using var H = tensor(h, ScalarType.Float64).reshape(Columns, Columns);
        var gptq = GptqSolver.Quantize(W, H, format, blockSize: 8);
        using var rtnCodes = RoundToNearest(W, gptq);
        double Error(Tensor q) { using var d = W - q; return (d.matmul(H) * d).sum().item<double>(); }
        using var q1 = gptq.Dequantize(ScalarType.Float64);
        using var q2 = rtnCodes;
        Assert.True(Error(q1) < 0.8 * Error(q2), $"GPTQ error {Error(q1)}, RTN error {Error(q2)}");
    }

    /// <summary>Each weight rounded to the nearest point of the grid GPTQ chose for it.</summary>
    static Tensor RoundToNearest(Tensor W, GptqWeight g)
    {
        using var scope = NewDisposeScope();
        var gi = g.GIdx.to(ScalarType.Int64);
        var scale = g.Scales.to(ScalarType.Float64).index_select(0, gi).t();            // (out, in)
        var zero = g.ZeroPoints().to(ScalarType.Float64).index_select(0, gi).t();
        var q = (W / scale).round().add_(zero).clamp_(0, g.Spec.MaxQ);
        return ((q - zero) * scale).MoveToOuterDisposeScope();
    }

    [Theory]
    [InlineData("gptq4-g8")]
    [InlineData("gptq3-g16-act")]
    [InlineData("gptq8")]
    public void Stored_layout_round_trips_and_dequantizes_as_the_bitwise_reference(string spelling)
    {
        var format = (GptqFormat)BaseFormat.Parse(spelling);
        var (w, h) = Problem(3);
        using var W = tensor(w, ScalarType.Float64).reshape(Rows, Columns).to(ScalarType.Float32);
        using var H = tensor(h, ScalarType.Float64).reshape(Columns, Columns).to(ScalarType.Float32);
        using var solution = GptqSolver.Solve(W, H, format);
        var stored = GptqWeight.FromCodes(format, solution.Codes, solution.Scales, solution.Zeros, solution.GIdx, ScalarType.Float32);
        using var linear = new GptqLinear(stored, ScalarType.Float32);

        // The packed codes and zero points read back as the solver's.
        Assert.Equal(solution.Codes.data<long>().ToArray(), linear.Stored.Codes().to(ScalarType.Int64).data<long>().ToArray());
        Assert.Equal(solution.Zeros.t().contiguous().to(ScalarType.Int64).data<long>().ToArray(),
            linear.Stored.ZeroPoints().to(ScalarType.Int64).data<long>().ToArray());
        // torch dequantization == the bit-by-bit reference.
        AssertBitsEqual(GptqReference.Dequantize(linear.Stored), Floats(linear.DequantizeWeight(ScalarType.Float32)), "dequantized");

        string name = "model.layers.0.mlp.up_proj.weight";
        var layout = GptqLayout.Instance.Configured(GptqLayout.Instance.QuantizationConfig(format, "float16", []));
        var tensors = layout.WriteLinear(linear, name);
        Assert.Equal(["model.layers.0.mlp.up_proj.qweight", "model.layers.0.mlp.up_proj.qzeros", "model.layers.0.mlp.up_proj.scales",
            "model.layers.0.mlp.up_proj.g_idx"], tensors.Keys);
        Assert.Equal(new long[] { GptqPacking.Words(Columns, format.Bits), Rows }, tensors["model.layers.0.mlp.up_proj.qweight"].shape);
        Assert.True(layout.IsStored(name, tensors.ContainsKey));
        Assert.Equal(format, layout.FormatOf(tensors, name));
        using var read = layout.Read(tensors, name, [Rows, Columns], CPU, ScalarType.Float32, KernelSelection.Portable);
        AssertTensorsIdentical(linear.DequantizeWeight(ScalarType.Float32), read.DequantizeWeight(ScalarType.Float32), "read back");
    }

    [Fact]
    public void Bad_inputs_are_one_line_errors()
    {
        // A group size that does not divide in_features.
        var e1 = Assert.Throws<ArgumentException>(() => new GptqFormat(4, 48).Groups(688, "model.layers.0.mlp.down_proj.weight"));
        Assert.Contains("group size 48 does not divide in_features 688", e1.Message);
        Assert.Contains("unknown option 'x'", Assert.Throws<FormatException>(() => BaseFormat.Parse("gptq4-x")).Message);
        Assert.Throws<ArgumentException>(() => new GptqFormat(5));

        // A desc_act checkpoint with no g_idx; packed tensors of the wrong shape.
        var config = new JsonObject { ["quant_method"] = "gptq", ["bits"] = 4, ["group_size"] = 8, ["desc_act"] = true };
        var layout = GptqLayout.Instance.Configured(config);
        string name = "model.layers.0.mlp.up_proj.weight", p = "model.layers.0.mlp.up_proj.";
        var header = new Dictionary<string, (ScalarType, long[])>
        {
            [p + "qweight"] = (ScalarType.Int32, [4, Rows]), [p + "qzeros"] = (ScalarType.Int32, [4, 1]), [p + "scales"] = (ScalarType.Float16, [4, Rows]),
        };
        (ScalarType, long[])? Header(string k) => header.TryGetValue(k, out var v) ? v : null;
        var e2 = Assert.Throws<InvalidDataException>(() => layout.CheckHeader(name, [Rows, Columns], Header));
        Assert.Contains("g_idx' is missing but quantization_config says desc_act: true", e2.Message);
        header[p + "g_idx"] = (ScalarType.Int32, [Columns]);
        header[p + "qweight"] = (ScalarType.Int32, [5, Rows]);
        var e3 = Assert.Throws<InvalidDataException>(() => layout.CheckHeader(name, [Rows, Columns], Header));
        Assert.Contains("'model.layers.0.mlp.up_proj.qweight' is Int32 [5, 6], but a 4-bit [6, 32] weight needs Int32 [4, 6]", e3.Message);
        foreach (var e in new Exception[] { e1, e2, e3 }) Assert.DoesNotContain('\n', e.Message);

        // A Hessian of the wrong size.
        using var w = zeros(Rows, Columns);
        using var h = eye(Columns - 1);
        Assert.Contains("expected [32, 32]", Assert.Throws<ArgumentException>(() => GptqSolver.Solve(w, h, new GptqFormat(4))).Message);
    }
}
