using QLoraNet.Peft;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

[Trait("tier", "unit")]
public class LoraApplierTests
{
    static readonly string[] Attention = ["q_proj", "k_proj", "v_proj", "o_proj"];

    [Fact]
    public void DefaultTargetsWrapTheAttentionProjectionsOfEveryLayer()
    {
        using var model = new TinyTestModel(layers: 2);
        var wrapped = LoraApplier.Apply(model, new LoraSettings(R: 4));

        var expected = new[] { 0, 1 }.SelectMany(i => Attention.Select(t => $"model.layers.{i}.self_attn.{t}")).ToList();
        Assert.Equal(expected.Order(), wrapped.Order());
        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module);
        foreach (var path in expected) Assert.IsType<LoraLinear>(modules[path]);
        Assert.IsType<DenseTestLinear>(modules["model.layers.0.self_attn.q_proj.base_layer"]);
        Assert.IsType<DenseTestLinear>(modules["model.layers.0.mlp.gate_proj"]);
        Assert.IsType<DenseTestLinear>(modules["lm_head"]);
    }

    /// <summary>
    /// Wrapping leaves alive the adapters' factors and nothing else (live native tensor handles, TorchSharp's per-thread
    /// count, no GC forced): each factor is one parameter; a handle on the initial value left undisposed would keep
    /// that storage (on the device, for a CUDA model) until a garbage collection. Dropout gives each adapter a module
    /// with no tensors.
    /// </summary>
    [Fact]
    public void Wrapping_leaves_only_the_adapter_factors_alive()
    {
        using var model = new TinyTestModel(layers: 2);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var wrapped = LoraApplier.Apply(model, new LoraSettings(R: 4, Dropout: 0.05), seed: 1);
        long added = DisposeScopeManager.Statistics.ThreadTotalLiveCount - before;
        Assert.Equal(2 * wrapped.Count, added);
    }

    [Fact]
    public void OnlyLoraParametersRemainTrainable()
    {
        using var model = new TinyTestModel(layers: 2);
        LoraApplier.Apply(model, new LoraSettings(R: 4));
        var trainable = TrainableParameters.Names(model);
        Assert.Equal(16, trainable.Count);
        Assert.All(trainable, n => Assert.True(AdapterKeys.IsLoraParameter(n), n));
        Assert.Contains("model.layers.1.self_attn.v_proj.lora_B.weight", trainable);
        // The body's norm weight was an ordinary trainable parameter before.
        Assert.False(model.get_parameter("model.norm")!.requires_grad);
    }

    [Fact]
    public void ForwardRunsThroughTheSwappedInModules()
    {
        using var model = new TinyTestModel(layers: 2);
        using var x = torch.randn(3, 8);
        using var before = model.forward(x);
        LoraApplier.Apply(model, new LoraSettings(R: 2, Dropout: 0));
        using var sameWhileBIsZero = model.forward(x);
        Assert.True(Bits.Same(sameWhileBIsZero, before));

        // Changing one B must change the output: the parent's field now holds the LoraLinear.
        var lora = (LoraLinear)model.named_modules().Single(m => m.name == "model.layers.1.self_attn.o_proj").module;
        using (torch.no_grad()) lora.B.fill_(0.5f);
        using var after = model.forward(x);
        Assert.False(after.allclose(before, rtol: 0, atol: 1e-4));
    }

    [Fact]
    public void AllLinearWrapsEveryFrozenLinearButTheOutputHead()
    {
        using var model = new TinyTestModel(layers: 2);
        var wrapped = LoraApplier.Apply(model, new LoraSettings(TargetModules: [LoraSettings.AllLinear]));
        Assert.Equal(14, wrapped.Count);
        Assert.Equal(["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
            wrapped.Select(LoraApplier.LeafName).Distinct().Order());
        Assert.DoesNotContain("lm_head", wrapped);
    }

    [Fact]
    public void LayerIndicesLimitTheWrappedLayers()
    {
        using var model = new TinyTestModel(layers: 3);
        var wrapped = LoraApplier.Apply(model, new LoraSettings(TargetModules: ["q_proj", "down_proj"], Layers: [0, 2]));
        Assert.Equal(
            ["model.layers.0.mlp.down_proj", "model.layers.0.self_attn.q_proj", "model.layers.2.mlp.down_proj", "model.layers.2.self_attn.q_proj"],
            wrapped.Order());
    }

    [Theory]
    [InlineData("model.layers.0.self_attn.q_proj", "q_proj", true)]
    [InlineData("model.layers.0.self_attn.q_proj", "self_attn.q_proj", true)]
    [InlineData("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.q_proj", true)]
    [InlineData("model.layers.0.self_attn.xq_proj", "q_proj", false)]
    [InlineData("model.layers.0.self_attn.q_proj", "proj", false)]
    public void TargetsMatchWholeTrailingPathComponents(string path, string target, bool expected) =>
        Assert.Equal(expected, LoraApplier.MatchesTarget(path, target));

    [Theory]
    [InlineData("model.layers.12.self_attn.q_proj", 12)]
    [InlineData("layers.3.mlp.up_proj", 3)]
    [InlineData("lm_head", null)]
    [InlineData("model.sublayers.4.x", null)]
    public void LayerIndexIsReadFromThePath(string path, int? expected) => Assert.Equal(expected, LoraApplier.LayerIndex(path));

    [Fact]
    public void MissingLayerIndexIsAnError()
    {
        using var model = new TinyTestModel(layers: 2);
        var e = Assert.Throws<ArgumentException>(() => LoraApplier.Apply(model, new LoraSettings(Layers: [5])));
        Assert.Equal("LoRA layer index 5 does not exist; the model's layers are 0, 1", e.Message);
    }

    [Fact]
    public void UnknownTargetIsAnErrorListingTheLinearNames()
    {
        using var model = new TinyTestModel(layers: 1);
        var e = Assert.Throws<ArgumentException>(() => LoraApplier.Apply(model, new LoraSettings(TargetModules: ["q_proj", "query"])));
        Assert.Equal("LoRA target 'query' matches no frozen linear module; the model's linear modules are: "
            + "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj", e.Message);
    }

    [Fact]
    public void ApplyingTwiceIsAnError()
    {
        using var model = new TinyTestModel(layers: 1);
        LoraApplier.Apply(model, new LoraSettings());
        var e = Assert.Throws<InvalidOperationException>(() => LoraApplier.Apply(model, new LoraSettings()));
        Assert.Contains("already has LoRA", e.Message);
    }

    [Fact]
    public void SameSeedGivesTheSameAdapters()
    {
        using var m1 = new TinyTestModel();
        using var m2 = new TinyTestModel();
        LoraApplier.Apply(m1, new LoraSettings(), seed: 9);
        LoraApplier.Apply(m2, new LoraSettings(), seed: 9);
        var p2 = m2.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in m1.named_parameters())
            Assert.True(Bits.Same(p, p2[name]), name);
    }

    [Fact]
    public void AFailedApplyLeavesTheModelAsItWas()
    {
        using var model = new TinyTestModel(layers: 1);
        Assert.Throws<ArgumentException>(() => LoraApplier.Apply(model, new LoraSettings(TargetModules: ["k_proj", "query"])));
        // k_proj could have been wrapped, but targets are all checked before any slot changes.
        Assert.DoesNotContain(model.modules(), m => m is LoraLinear);
        Assert.True(model.get_parameter("model.layers.0.self_attn.k_proj.weight")!.requires_grad);
    }

    [Fact]
    public void TheOutputHeadCanBeTargetedByName()
    {
        using var model = new TinyTestModel(layers: 1);
        var wrapped = LoraApplier.Apply(model, new LoraSettings(R: 2, Dropout: 0, TargetModules: ["lm_head"]));
        Assert.Equal(["lm_head"], wrapped);
        Assert.IsType<LoraLinear>(model.GetLinear("lm_head"));
        Assert.IsType<DenseTestLinear>(model.named_modules().Single(m => m.name == "lm_head.base_layer").module);
    }

    [Fact]
    public void InvalidRankOrDropoutIsAOneLineError()
    {
        using var model = new TinyTestModel(layers: 1);
        Assert.Equal("LoRA rank r=0 must be positive",
            Assert.Throws<ArgumentException>(() => LoraApplier.Apply(model, new LoraSettings(R: 0))).Message);
        using var other = new TinyTestModel(layers: 1);
        Assert.Equal("LoRA dropout 1 must be in [0, 1)",
            Assert.Throws<ArgumentException>(() => LoraApplier.Apply(other, new LoraSettings(Dropout: 1))).Message);
    }
}
