using QLoraNet.Peft;
using QLoraNet.Quant;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

[Trait("tier", "unit")]
public class TrainableParametersTests
{
    [Fact]
    public void CountsLoraAsTrainableAndEverythingAsTotal()
    {
        // 2 layers, hidden 8, intermediate 12, vocab 10, r 4 on q/k/v/o.
        using var model = new TinyTestModel(layers: 2, hidden: 8, intermediate: 12, vocab: 10);
        LoraApplier.Apply(model, new LoraSettings(R: 4));
        var count = TrainableParameters.Count(model);
        long lora = 2 * 4 * (4 * 8 + 8 * 4);                      // 512
        long baseWeights = 2 * (4 * 8 * 8 + 3 * 8 * 12) + 10 * 8 + 8;  // attention, mlp, lm_head, norm = 1176
        Assert.Equal(lora, count.Trainable);
        Assert.Equal(baseWeights + lora, count.Total);
    }

    [Fact]
    public void APackedFrozenWeightCountsByItsLogicalSize()
    {
        using var model = new PackedHolder();
        var count = TrainableParameters.Count(model);
        Assert.Equal(0, count.Trainable);
        Assert.Equal(64 * 32, count.Total);  // not the 1024 packed bytes nor the scales
    }

    [Fact]
    public void FormatsLikePeftsSummary()
    {
        Assert.Equal("trainable 4.2M of 6.7B (0.06%)", new ParameterCount(4_194_304, 6_742_609_920).ToString());
        Assert.Equal("trainable 512 of 1.7K (30.33%)", new ParameterCount(512, 1688).ToString());
        Assert.Equal("0", ParameterCount.Human(0));
        Assert.Equal("999", ParameterCount.Human(999));
        Assert.Equal("1.0K", ParameterCount.Human(1000));
    }

    /// <summary>A stand-in for a 4-bit base: half a byte per weight in a uint8 buffer, plus one scale per 64.</summary>
    private sealed class PackedTestLinear : FrozenLinear
    {
        private readonly Tensor packed;
        private readonly Parameter scales;

        public PackedTestLinear(long inF, long outF) : base(nameof(PackedTestLinear), inF, outF, ScalarType.Float32)
        {
            packed = torch.zeros(outF * inF / 2, ScalarType.Byte);
            scales = new Parameter(torch.ones(outF * inF / 64), requires_grad: false);
            RegisterComponents();
        }

        public override string FormatName => "packed-test";
        public override long StorageBytes => packed.numel() + 4 * scales.numel();
        public override Tensor DequantizeWeight(ScalarType dtype) => torch.zeros(OutFeatures, InFeatures, dtype);
        public override Tensor forward(Tensor x) => torch.zeros(x.shape[0], OutFeatures);
    }

    private sealed class PackedHolder : nn.Module<Tensor, Tensor>
    {
        private readonly nn.Module<Tensor, Tensor> proj = new PackedTestLinear(32, 64);
        public PackedHolder() : base(nameof(PackedHolder)) => RegisterComponents();
        public override Tensor forward(Tensor x) => proj.forward(x);
    }
}
