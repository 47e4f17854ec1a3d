using QLoraNet.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

[Trait("tier", "unit")]
public class LoraLinearTests
{
    [Fact]
    public void ZeroB_GivesExactlyTheBaseOutput()
    {
        using var baseLayer = DenseTestLinear.Random(16, 12, seed: 3);
        using var lora = new LoraLinear(baseLayer, r: 4, alpha: 8, dropout: 0.1, useRsLora: false);
        lora.train();  // dropout active: still nothing may reach the output while B = 0
        using var x = torch.randn(5, 7, 16);
        using var expected = baseLayer.forward(x);
        using var actual = lora.forward(x);
        Assert.Equal(new long[] { 5, 7, 12 }, actual.shape);
        Assert.True(Bits.Same(actual, expected));
    }

    [Fact]
    public void ParametersAreNamedLikePeft()
    {
        using var lora = new LoraLinear(DenseTestLinear.Random(6, 5, seed: 1), r: 2, alpha: 4, dropout: 0.05, useRsLora: false);
        var names = lora.named_parameters().Select(p => p.name).ToList();
        Assert.Equal(["base_layer.weight", "lora_A.weight", "lora_B.weight"], names);
        Assert.Equal(new long[] { 2, 6 }, lora.A.shape);   // (r, in)
        Assert.Equal(new long[] { 5, 2 }, lora.B.shape);   // (out, r)
        Assert.Equal(ScalarType.Float32, lora.A.dtype);
        Assert.Equal(0, lora.B.abs().sum().item<float>());
    }

    [Fact]
    public void A_StartsKaimingUniformWithBoundOneOverSqrtFanIn()
    {
        Assert.Equal(1 / Math.Sqrt(256), LoraMath.KaimingUniformBound(256), 15);
        using var g = new Generator(7);
        using var lora = new LoraLinear(DenseTestLinear.Random(256, 8, seed: 1), r: 64, alpha: 16, dropout: 0, useRsLora: false, g);
        double bound = 1 / Math.Sqrt(256);
        double maxAbs = lora.A.abs().max().item<float>();
        Assert.True(maxAbs <= bound && maxAbs > 0.99 * bound, $"max |A| = {maxAbs}, bound {bound}");
        // U(-b, b) has standard deviation b / sqrt(3); 16384 draws pin it to about 1%.
        double std = lora.A.std().item<float>();
        Assert.InRange(std, 0.97 * bound / Math.Sqrt(3), 1.03 * bound / Math.Sqrt(3));
    }

    [Fact]
    public void SameSeedGivesTheSameA()
    {
        using var g1 = new Generator(42);
        using var g2 = new Generator(42);
        using var a = new LoraLinear(DenseTestLinear.Random(10, 4, seed: 1), 3, 6, 0, false, g1);
        using var b = new LoraLinear(DenseTestLinear.Random(10, 4, seed: 2), 3, 6, 0, false, g2);
        Assert.True(Bits.Same(a.A, b.A));
    }

    [Theory]
    [InlineData(false, 2.0)]  // alpha / r = 8 / 4
    [InlineData(true, 4.0)]   // alpha / sqrt(r) = 8 / 2
    public void OutputIsBasePlusScaledLowRankUpdate(bool rsLora, double expectedScaling)
    {
        // in = 2, out = 1, r = 4: W = [0.5, 0.5], A rows all [1, 2], B = [3, 0, 0, 0], x = [1, 1].
        using var w = torch.tensor(new float[] { 0.5f, 0.5f }).reshape(1, 2);
        using var lora = new LoraLinear(new DenseTestLinear(w), r: 4, alpha: 8, dropout: 0, useRsLora: rsLora);
        Assert.Equal(expectedScaling, lora.Scaling);
        using (torch.no_grad())
        {
            lora.A.copy_(torch.tensor(new float[] { 1, 2, 1, 2, 1, 2, 1, 2 }).reshape(4, 2));
            lora.B.copy_(torch.tensor(new float[] { 3, 0, 0, 0 }).reshape(1, 4));
        }
        using var x = torch.ones(1, 2);
        // base = 1; A x = [3, 3, 3, 3]; B A x = 9; y = 1 + scaling * 9.
        Assert.Equal(1 + expectedScaling * 9, lora.forward(x).item<float>(), 5);
    }

    [Fact]
    public void ComputesInTheBaseDTypeAndKeepsFp32Factors()
    {
        using var w = torch.randn(4, 6);
        using var lora = new LoraLinear(new DenseTestLinear(w, ScalarType.BFloat16), r: 2, alpha: 4, dropout: 0, useRsLora: false);
        using var x = torch.randn(3, 6);
        using var y = lora.forward(x);
        Assert.Equal(ScalarType.BFloat16, y.dtype);
        Assert.Equal(ScalarType.Float32, lora.A.dtype);
        Assert.Equal(ScalarType.Float32, lora.B.dtype);
    }

    [Fact]
    public void ConvertingTheModelsDTypeKeepsTheFactorsFp32()
    {
        using var model = new TinyTestModel(layers: 1);
        LoraApplier.Apply(model, new LoraSettings(R: 2));
        model.to(ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, model.get_parameter("model.norm")!.dtype);
        foreach (var (name, p) in model.named_parameters().Where(p => AdapterKeys.IsLoraParameter(p.name)))
        {
            Assert.Equal(ScalarType.Float32, p.dtype);
            Assert.True(p.requires_grad, name);
        }
    }

    [Fact]
    public void AdamW_MovesOnlyAAndB_BaseUnchangedBitForBit()
    {
        using var model = new TinyTestModel();
        LoraApplier.Apply(model, new LoraSettings(R: 2, Alpha: 4, Dropout: 0), seed: 1);
        var before = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        // All parameters go to the optimizer: freezing alone must keep the base still.
        using var opt = torch.optim.AdamW(model.parameters(), lr: 0.01, weight_decay: 0.1);
        using var x = torch.randn(4, 8);

        void Step()
        {
            using var scope = NewDisposeScope();
            opt.zero_grad();
            model.forward(x).square().mean().backward();
            opt.step();
        }
        bool Same(string name) => Bits.Same(model.get_parameter(name)!, before[name]);

        Step();
        foreach (var name in before.Keys)
        {
            if (name.EndsWith("lora_B.weight")) Assert.False(Same(name), name + " should move");
            // While B = 0 the gradient of A is exactly 0; weight decay alone moves A (decoupled, Loshchilov & Hutter).
            else if (name.EndsWith("lora_A.weight")) Assert.False(Same(name), name + " should decay");
            else Assert.True(Same(name), name + " must stay bit-identical");
        }
        Step();
        foreach (var name in before.Keys.Where(n => !AdapterKeys.IsLoraParameter(n)))
            Assert.True(Same(name), name + " must stay bit-identical");
    }

    [Fact]
    public void MergedWeight_IsWPlusScaledBA()
    {
        using var w = torch.eye(2);
        using var a = torch.tensor(new float[] { 1, 2 }).reshape(1, 2);
        using var b = torch.tensor(new float[] { 1, 3 }).reshape(2, 1);
        using var merged = LoraMath.MergedWeight(w, a, b, 0.5);
        Assert.Equal(new float[] { 1.5f, 1f, 1.5f, 4f }, merged.data<float>().ToArray());
    }

    [Fact]
    public void MergedWeight_ReproducesTheLoraForward()
    {
        using var g = new Generator(5);
        using var lora = new LoraLinear(DenseTestLinear.Random(6, 5, seed: 4), r: 3, alpha: 6, dropout: 0, useRsLora: true, g);
        using (torch.no_grad()) lora.B.normal_(generator: g);
        using var merged = LoraMath.MergedWeight(lora.BaseLayer.DequantizeWeight(ScalarType.Float32), lora.A, lora.B, lora.Scaling);
        using var x = torch.randn(4, 6, generator: g);
        Assert.True(nn.functional.linear(x, merged).allclose(lora.forward(x), rtol: 1e-5, atol: 1e-5));
    }

    [Fact]
    public void MergedWeight_RejectsMismatchedShapes()
    {
        var e = Assert.Throws<ArgumentException>(() => LoraMath.MergedWeight(torch.zeros(4, 6), torch.zeros(2, 5), torch.zeros(4, 2), 1));
        Assert.Contains("A [2, 5]", e.Message);
    }
}
