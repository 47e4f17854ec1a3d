using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Quant.QuantTestData;

namespace QLoraNet.Tests.Quant;

[Trait("tier", "unit")]
public class FrozenLinearTests
{
    [Theory]
    [InlineData("nf4")]
    [InlineData("fp4-dq")]
    [InlineData("int4-g32-asym")]
    [InlineData("int8")]
    public void Input_gradient_equals_dense_linear_on_the_dequantized_weight_exactly(string format)
    {
        using var scope = NewDisposeScope();
        var weight = tensor(Normal(48 * 64, seed: 7, sigma: 0.05f), [48, 64]);
        var linear = FrozenLinearFactory.Create(weight, BaseFormat.Parse(format), ScalarType.Float32, CPU);
        var dense = linear.DequantizeWeight(ScalarType.Float32);

        foreach (long[] shape in new[] { new long[] { 5, 64 }, [2, 3, 64] })
        {
            var data = tensor(Normal(64 * 6, seed: 8).Take((int)(shape.Aggregate(1L, (a, b) => a * b))).ToArray(), shape);
            var gradOut = tensor(Normal(48 * 6, seed: 9).Take((int)(shape[..^1].Aggregate(1L, (a, b) => a * b) * 48)).ToArray())
                .view([.. shape[..^1], 48]);

            var x = data.clone().requires_grad_(true);
            var y = linear.forward(x);
            y.backward([gradOut]);

            var xRef = data.clone().requires_grad_(true);
            var yRef = nn.functional.linear(xRef, dense);
            yRef.backward([gradOut]);

            AssertBitsEqual(Floats(yRef), Floats(y), $"{format} output {string.Join('x', shape)}");
            AssertBitsEqual(Floats(xRef.grad!), Floats(x.grad!), $"{format} input grad {string.Join('x', shape)}");
        }
        Assert.Empty(linear.parameters());
        Assert.Equal(format, linear.FormatName);
    }

    [Fact]
    public void Bf16_compute_matches_a_bf16_linear_on_the_dequantized_weight()
    {
        using var scope = NewDisposeScope();
        var weight = tensor(Normal(32 * 64, seed: 13, sigma: 0.05f), [32, 64]).to(ScalarType.BFloat16);
        var linear = FrozenLinearFactory.Create(weight, BaseFormat.Parse("nf4-dq"), ScalarType.BFloat16, CPU);
        var x = tensor(Normal(4 * 64, seed: 14), [4, 64]).to(ScalarType.BFloat16).requires_grad_(true);
        var y = linear.forward(x);
        Assert.Equal(ScalarType.BFloat16, y.dtype);
        var expected = nn.functional.linear(x.detach(), linear.DequantizeWeight(ScalarType.BFloat16));
        AssertBitsEqual(Floats(expected), Floats(y), "bf16 output");
        y.sum().backward();
        Assert.Equal(ScalarType.BFloat16, x.grad!.dtype);
    }

    [Fact]
    public void Four_bit_linear_holds_its_stored_form_as_buffers_and_ignores_dtype_conversion()
    {
        using var scope = NewDisposeScope();
        var q = FourBitWeight.Quantize(tensor(Normal(32 * 64, seed: 10), [32, 64]), FourBitType.Nf4, doubleQuant: true);
        var linear = new FourBitLinear(q, ScalarType.Float32);
        Assert.Equal(new[] { "weight", "absmax", "nested_absmax" }, linear.named_buffers().Select(b => b.name).ToArray());
        Assert.Equal((64L, 32L), (linear.InFeatures, linear.OutFeatures));

        var before = Floats(linear.DequantizeWeight(ScalarType.Float32));
        linear.to(ScalarType.Float64);
        linear.to(CPU);
        Assert.Equal(ScalarType.Float32, linear.named_buffers().Single(b => b.name == "nested_absmax").buffer.dtype);
        AssertBitsEqual(before, Floats(linear.DequantizeWeight(ScalarType.Float32)), "after .to()");
        Assert.Equal(q.StorageBytes, linear.StorageBytes);
    }

    [Fact]
    public void Dense_frozen_linear_keeps_a_non_trainable_buffer_and_casts_for_compute()
    {
        using var scope = NewDisposeScope();
        var weight = tensor(Normal(16 * 8, seed: 11), [16, 8]);
        var linear = FrozenLinearFactory.Create(weight, BaseFormat.Parse("bf16"), ScalarType.Float32, CPU);
        Assert.Empty(linear.parameters());
        Assert.Equal("bf16", linear.FormatName);
        Assert.Equal(16 * 8 * 2, linear.StorageBytes);

        var x = tensor(Normal(3 * 8, seed: 12), [3, 8]).requires_grad_(true);
        var y = linear.forward(x);
        y.sum().backward();
        var w32 = weight.to(ScalarType.BFloat16).to(ScalarType.Float32);
        AssertBitsEqual(Floats(nn.functional.linear(x.detach(), w32)), Floats(y), "dense output");
        AssertBitsEqual(Floats(ones(3, 16).matmul(w32)), Floats(x.grad!), "dense input grad");
    }
}
