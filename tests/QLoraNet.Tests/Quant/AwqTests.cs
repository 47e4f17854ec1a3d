using QLoraNet.Quant;
using QLoraNet.Quant.Awq;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Quant.QuantTestData;

namespace QLoraNet.Tests.Quant;

/// <summary>AWQ's activation-aware scale search on a planted salient channel, its rounding, and AutoAWQ's GEMM layout.</summary>
[Trait("tier", "unit")]
public class AwqTests
{
    const int Out = 16, In = 64, Tokens = 128, Group = 16, Salient = 7;

    /// <summary>W (out, in) ~ N(0, 1); X (tokens, in) ~ N(0, 1) except input channel 7, 50x larger: the one channel
    /// whose weights matter most to the output (AWQ section 3.1's "salient" channel, found from activations).</summary>
    static (Tensor W, Tensor X) Planted()
    {
        var w = tensor(Normal(Out * In, 21)).reshape(Out, In);
        var x = tensor(Normal(Tokens * In, 22)).reshape(Tokens, In);
        x.select(1, Salient).mul_(50);
        return (w, x);
    }

    static double OutputError(Tensor w, Tensor x, Tensor q)
    {
        using var scope = NewDisposeScope();
        return (x.matmul(q.t()) - x.matmul(w.t())).pow(2).mean().to(ScalarType.Float64).item<double>();
    }

    [Fact]
    public void Scale_search_protects_a_planted_salient_channel()
    {
        var (w, x) = Planted();
        using (w)
        using (x)
        using (var xMean = AwqSearch.InputMean(x))
        using (var wMean = AwqSearch.WeightMean([w], Group))
        {
            var choice = AwqSearch.SearchScales(xMean, wMean, s => { using var q = AwqSearch.ScaledRoundTrip(w, s, Group); return OutputError(w, x, q); });
            using var s = choice.Scales;
            // Ratio 0 is plain round-to-nearest (s = 1 after normalisation): the search must find a better ratio.
            Assert.True(choice.Ratio > 0, $"ratio {choice.Ratio}");
            Assert.True(choice.Errors.Min() < 0.7 * choice.Errors[0], $"best error {choice.Errors.Min()}, RTN {choice.Errors[0]}");
            // The salient channel gets the largest scale (its weights are quantized on a finer relative grid).
            Assert.Equal(Salient, s.argmax().item<long>());
            // ... and its column's rounding error shrinks compared with plain rounding.
            using var rtn = AwqSearch.PseudoQuantize(w, Group);
            using var awq = AwqSearch.ScaledRoundTrip(w, s, Group);
            double ColumnError(Tensor q) { using var d = (q - w).select(1, Salient); return d.abs().mean().item<float>(); }
            Assert.True(ColumnError(awq) < 0.5 * ColumnError(rtn), $"salient column error {ColumnError(awq)} vs RTN {ColumnError(rtn)}");
        }
    }

    [Fact]
    public void Clip_search_bounds_do_not_depend_on_the_row_batch()
    {
        // SearchClip batches output rows to bound its (rows, tokens, in) temporaries; each row's search is independent,
        // so one batch of all rows, batches of 3 (not dividing 40) and single rows must give the same bits.
        const int rows = 40;
        using var scope = NewDisposeScope();
        var w = tensor(Normal(rows * In, 31)).reshape(rows, In);
        var x = tensor(Normal(300 * In, 32)).reshape(300, In);
        x.select(1, Salient).mul_(20);
        float[] Bounds(long budget) => AwqSearch.SearchClip(w, x, Group, batchFloats: budget).contiguous().data<float>().ToArray();
        var whole = Bounds(AwqSearch.ClipBatchFloats);
        Assert.Equal(whole, Bounds(3L * 300 * In));
        Assert.Equal(whole, Bounds(1));
        // Not vacuous: some groups are clipped below their max |w|.
        var max = w.abs().reshape(rows, -1, Group).amax([2]).contiguous().data<float>().ToArray();
        Assert.Contains(whole.Zip(max), p => p.First < p.Second);
    }

    [Fact]
    public void Search_fake_quantization_is_the_rounding_bit_for_bit()
    {
        // The searches use a leaner fake-quantization than Round (no integer codes, in-place steps); it must give the
        // very bits of Round's dequantized weight, or the chosen scales and bounds could change. Groups with a wide
        // range, a constant group (range below 1e-5: scale clamped) and halfway cases (half to even) are included.
        using var scope = NewDisposeScope();
        var w = tensor(Normal(Out * In, 41)).reshape(Out, In);
        w.narrow(0, 0, 1).narrow(1, 0, Group).fill_(0.3f);
        w.narrow(0, 1, 1).narrow(1, 0, 4).copy_(tensor(new[] { -1f, 0f, 0.5f, 2f }));
        w.select(1, Salient).mul_(100);
        AssertTensorsIdentical(AwqSearch.Round(w, Group).Dequantized, AwqSearch.PseudoQuantize(w, Group), "pseudo-quantize");
        // Q(W·s)/s as written before: Round of the scaled weight, divided by the scales.
        var s = tensor(Normal(In, 42)).abs().add_(0.1f);
        var expected = AwqSearch.Round(w * s.unsqueeze(0), Group).Dequantized / s.unsqueeze(0);
        AssertTensorsIdentical(expected, AwqSearch.ScaledRoundTrip(w, s, Group), "scaled round trip");
    }

    [Fact]
    public void Scale_search_takes_the_first_smallest_error_and_never_a_nan()
    {
        // AutoAWQ keeps a candidate when its loss is strictly below the best so far: of two equal minima the first
        // wins, and a NaN loss (never below anything) never does. The device-tensor errors read back at once must
        // choose as the per-candidate host doubles did.
        using var scope = NewDisposeScope();
        double[] losses = [5, double.NaN, 2, 3, 2, double.NaN, 4, 2, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9];
        var xMean = tensor(Normal(In, 43)).abs().add_(0.1f);
        var wMean = tensor(Normal(In, 44)).abs().add_(0.1f);
        int calls = 0;
        var onDevice = AwqSearch.SearchScales(xMean, wMean, _ => tensor(losses[calls++], ScalarType.Float64));
        Assert.Equal(20, calls);
        Assert.Equal(0.1, onDevice.Ratio);
        Assert.Equal(losses, onDevice.Errors);
        AssertTensorsIdentical(AwqSearch.CandidateScales(xMean, wMean, 0.1), onDevice.Scales, "chosen scales");
        calls = 0;
        var onHost = AwqSearch.SearchScales(xMean, wMean, (Tensor _) => losses[calls++]);
        Assert.Equal(onDevice.Ratio, onHost.Ratio);
        calls = 0;
        Assert.Throws<InvalidOperationException>(() => AwqSearch.SearchScales(xMean, wMean, (Tensor _) => double.NaN));
    }

    [Fact]
    public void Rounding_follows_autoawq_zero_point_grid()
    {
        // One group [-1, 0, 0.5, 2]: scale = 3 / 15 = 0.2, zero = clamp(-round(-1 / 0.2), 0, 15) = 5,
        // q = clamp(round(w / 0.2) + 5): -1 -> 0, 0 -> 5, 0.5 -> round(2.5) = 2 (half to even) + 5 = 7, 2 -> 15.
        using var w = tensor(new[] { -1f, 0f, 0.5f, 2f }).reshape(1, 4);
        using var r = AwqSearch.Round(w, 4);
        Assert.Equal(new long[] { 0, 5, 7, 15 }, r.Codes.data<long>().ToArray());
        Assert.Equal(new long[] { 5 }, r.Zeros.data<long>().ToArray());
        Assert.Equal(0.2f, r.Scales.item<float>(), 1e-7f);
    }

    [Theory]
    [InlineData("awq4-g16")]
    [InlineData("awq4")]
    public void Gemm_layout_round_trips(string spelling)
    {
        var format = (AwqFormat)BaseFormat.Parse(spelling);
        var (w, x) = Planted();
        using (w)
        using (x)
        {
            var stored = AwqSearch.Quantize(w, format, "model.layers.0.mlp.up_proj.weight");
            using var linear = new AwqLinear(stored, ScalarType.Float32);
            long group = format.GroupLength(In);
            using var expected = AwqSearch.PseudoQuantize(w, group);
            // Packing then dequantizing gives the rounding's dequantized weight up to fp16 scales: |Δ| <= |q - z| ·
            // |s - fp16(s)| <= 15 · 2^-11 · s.
            using var dense = linear.DequantizeWeight(ScalarType.Float32);
            using var bound = AwqSearch.Round(w, group).Scales.repeat_interleave(group, 1) * (15 * Math.Pow(2, -11));
            Assert.True((dense - expected).abs().le(bound + 1e-7).all().item<bool>());

            string name = "model.layers.0.mlp.up_proj.weight";
            var layout = AwqLayout.Instance.Configured(AwqLayout.Instance.QuantizationConfig(format, "float16", []));
            var tensors = layout.WriteLinear(linear, name);
            Assert.Equal(new long[] { In, Out / 8 }, tensors["model.layers.0.mlp.up_proj.qweight"].shape);
            Assert.Equal(format, layout.FormatOf(tensors, name));
            using var read = layout.Read(tensors, name, [Out, In], CPU, ScalarType.Float32, KernelSelection.Portable);
            AssertTensorsIdentical(dense, read.DequantizeWeight(ScalarType.Float32), "read back");
            // AutoAWQ's interleaved nibble order: output j of a word's eight sits in nibble REVERSE_ORDER[j] (nibble k
            // holds output ORDER[k]), so outputs 0..7 pack to the nibbles 0, 2, 4, 6, 1, 3, 5, 7 from the low end.
            using var codes = torch.arange(8, ScalarType.Int64).reshape(1, 8);
            uint word = (uint)AwqWeight.Pack(codes).item<int>();
            Assert.Equal(0x75316420u, word);
        }
    }

    [Fact]
    public void A_group_size_that_does_not_divide_in_features_is_one_line()
    {
        var e = Assert.Throws<ArgumentException>(() => new AwqFormat(48).GroupLength(688, "model.layers.0.mlp.down_proj.weight"));
        Assert.Contains("48", e.Message);
        Assert.Contains("688", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}
