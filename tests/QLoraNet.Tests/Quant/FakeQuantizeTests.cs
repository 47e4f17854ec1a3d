using QLoraNet.Quant;
using QLoraNet.Quant.Aware;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Quant.QuantTestData;

namespace QLoraNet.Tests.Quant;

/// <summary>Fake quantization for quantization-aware training: forward = the format's round trip, backward = the
/// straight-through estimator (identity).</summary>
[Trait("tier", "unit")]
public class FakeQuantizeTests
{
    [Theory]
    [InlineData("int4-g32")]
    [InlineData("nf4")]
    [InlineData("int3")]
    public void Forward_is_the_format_round_trip_and_backward_is_straight_through(string spelling)
    {
        var format = BaseFormat.Parse(spelling);
        var roundTrip = new FormatRoundTrip(format);
        using var w = tensor(Normal(8 * 64, 51)).reshape(8, 64).requires_grad_(true);
        using var g = tensor(Normal(8 * 64, 52)).reshape(8, 64);
        using var y = FakeQuantize.apply(w, roundTrip, "model.layers.0.mlp.up_proj.weight");

        using (var expected = format.RoundTrip(w.detach()))
            AssertTensorsIdentical(expected, y.detach(), "forward");
        Assert.False(y.detach().eq(w.detach()).all().item<bool>());                      // it did quantize

        using var loss = (y * g).sum();
        loss.backward();
        AssertTensorsIdentical(g, w.grad!, "d loss / d w");                             // STE: the rounding's gradient is 1
    }

    [Fact]
    public void Fake_quantized_linear_computes_with_the_round_tripped_weight_and_passes_input_gradients()
    {
        var format = BaseFormat.Parse("int4-g32");
        using var w = tensor(Normal(16 * 64, 53)).reshape(16, 64);
        using var baseLinear = new DenseFrozenLinear(w.clone(), ScalarType.Float32);
        using var linear = new FakeQuantizedLinear(baseLinear, new FormatRoundTrip(format), "model.layers.0.mlp.up_proj.weight");
        using var x = tensor(Normal(3 * 64, 54)).reshape(3, 64).requires_grad_(true);
        using var q = format.RoundTrip(w);
        using var y = linear.call(x);
        // Same matmul of the same fp32 operands: identical.
        using (var expected = x.detach().matmul(q.t())) AssertTensorsIdentical(expected, y.detach(), "forward");
        y.sum().backward();
        using var expectedGrad = ones(3, 16).matmul(q);
        AssertTensorsIdentical(expectedGrad, x.grad!, "d y / d x");
    }

    [Fact]
    public void Calibrated_or_no_formats_are_refused_for_awareness()
    {
        Assert.Contains("needs calibration", Assert.Throws<ArgumentException>(() => new FormatRoundTrip(BaseFormat.Parse("gptq4-g128"))).Message);
        Assert.Contains("nothing to be aware of", Assert.Throws<ArgumentException>(() => new FormatRoundTrip(BaseFormat.Parse("none"))).Message);
    }
}
