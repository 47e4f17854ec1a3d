using QLoraNet.Peft;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>LoRA over the real QLoRA base: an NF4 double-quantized FourBitLinear (packed uint8 buffers, no parameters).</summary>
[Trait("tier", "unit")]
public class LoraOnNf4Tests
{
    static FourBitLinear Nf4Base(long inF, long outF, ulong seed)
    {
        using var g = new Generator(seed);
        using var w = torch.randn(outF, inF, generator: g).mul_(0.05);
        return new FourBitLinear(FourBitWeight.Quantize(w, FourBitType.Nf4, blockSize: 64, doubleQuant: true), ScalarType.Float32);
    }

    [Fact]
    public void ZeroBIsTheNf4OutputAndGradientsReachBothFactors()
    {
        using var baseLayer = Nf4Base(128, 64, 1);
        using var g = new Generator(2);
        using var lora = new LoraLinear(baseLayer, r: 8, alpha: 16, dropout: 0, useRsLora: false, g);
        using var x = torch.randn(3, 5, 128, generator: g);
        using (var _ = torch.no_grad())
            Assert.True(Bits.Same(lora.forward(x), baseLayer.forward(x)));

        // Step B off zero so A gets a gradient too; the packed base has nothing to train.
        using (torch.no_grad()) lora.B.normal_(generator: g);
        using (var scope = NewDisposeScope()) lora.forward(x).square().mean().backward();
        Assert.True(lora.A.grad!.abs().sum().item<float>() > 0);
        Assert.True(lora.B.grad!.abs().sum().item<float>() > 0);
        Assert.Empty(baseLayer.parameters());
    }

    [Fact]
    public void Nf4BaseCountsByLogicalSizeAndMergesDequantized()
    {
        using var baseLayer = Nf4Base(128, 64, 3);
        using var g = new Generator(4);
        using var lora = new LoraLinear(baseLayer, r: 4, alpha: 8, dropout: 0, useRsLora: false, g);
        var count = TrainableParameters.Count(lora);
        Assert.Equal(4 * 128 + 64 * 4, count.Trainable);
        Assert.Equal(128 * 64 + 4 * 128 + 64 * 4, count.Total);  // not the 4096 packed bytes

        using (torch.no_grad()) lora.B.normal_(generator: g);
        using var merged = LoraMath.MergedWeight(baseLayer.DequantizeWeight(ScalarType.Float32), lora.A, lora.B, lora.Scaling);
        using var x = torch.randn(6, 128, generator: g);
        Assert.True(nn.functional.linear(x, merged).allclose(lora.forward(x), rtol: 1e-4, atol: 1e-5));
    }
}
