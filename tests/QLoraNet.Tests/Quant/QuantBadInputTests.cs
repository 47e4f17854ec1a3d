using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Quant;

[Trait("tier", "unit")]
public class QuantBadInputTests
{
    [Theory]
    [InlineData(48)]
    [InlineData(0)]
    [InlineData(-64)]
    public void Blocksize_not_a_power_of_two_is_rejected(int blockSize)
    {
        var e = Assert.Throws<ArgumentException>(() => FourBitWeight.Quantize(ones(4, 64), FourBitType.Nf4, blockSize, name: "lm_head.weight"));
        Assert.Contains($"blocksize {blockSize}", e.Message);
        Assert.Contains("lm_head.weight", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Blocksize_larger_than_the_tensor_is_rejected()
    {
        var e = Assert.Throws<ArgumentException>(() => FourBitWeight.Quantize(ones(2, 16), FourBitType.Fp4, 64));
        Assert.Contains("larger than the tensor (32 elements)", e.Message);
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    [InlineData(float.NegativeInfinity)]
    public void Non_finite_values_are_rejected_naming_the_tensor(float bad)
    {
        var w = ones(8, 8);
        w[3, 5] = tensor(bad);
        var e = Assert.Throws<ArgumentException>(() => FourBitWeight.Quantize(w, FourBitType.Nf4, 64, name: "model.layers.3.mlp.down_proj.weight"));
        Assert.Contains("model.layers.3.mlp.down_proj.weight", e.Message);
        Assert.Contains("NaN or Inf", e.Message);
        Assert.Throws<ArgumentException>(() => LinearQuantWeight.Quantize(w, new LinearQuantFormat(8)));
        Assert.Throws<ArgumentException>(() => FrozenLinearFactory.Create(w, BaseFormat.Parse("nf4-dq"), ScalarType.Float32, CPU, "x"));
    }

    [Fact]
    public void Integer_weights_are_rejected()
    {
        var e = Assert.Throws<ArgumentException>(() => FourBitWeight.Quantize(ones(8, 8, dtype: ScalarType.Int32), FourBitType.Nf4, 64));
        Assert.Contains("not floating point", e.Message);
    }
}
