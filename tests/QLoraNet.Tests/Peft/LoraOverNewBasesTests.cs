using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using QLoraNet.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>
/// LoRA over the llm-int8, hqq and ternary bases: B = 0 is the base, a step trains only A and B, and merging out
/// of each base (W' = dequant(W) + s·B·A) and into each format (re-quantized, written in its layout) works.
/// </summary>
[Trait("tier", "unit")]
public class LoraOverNewBasesTests
{
    public static TheoryData<string> Formats => new() { "llm-int8", "llm-int8-t1", "hqq4", "hqq3", "hqq2", "hqq8", "ternary" };

    static FrozenLinear Base(string spelling, ulong seed)
    {
        using var g = new Generator(seed);
        using var w = randn([64, 128], generator: g).mul_(0.05);
        return BaseFormat.Parse(spelling).Create(w, ScalarType.Float32, KernelSelection.Portable, "w");
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Zero_b_is_the_base_and_a_step_changes_only_a_and_b(string spelling)
    {
        using var baseLayer = Base(spelling, 1);
        using var g = new Generator(2);
        using var lora = new LoraLinear(baseLayer, r: 4, alpha: 8, dropout: 0, useRsLora: false, g);
        using var x = randn([3, 5, 128], generator: g);
        using (no_grad())
        {
            using var a = lora.forward(x);
            using var b = baseLayer.forward(x);
            Assert.True(Bits.Same(a, b));
        }
        Assert.Empty(baseLayer.parameters());
        var trainable = lora.parameters().Where(p => p.requires_grad).ToList();
        Assert.Equal(2, trainable.Count);

        var before = baseLayer.buffers().Select(t => t.clone()).ToList();
        using (no_grad()) lora.B.normal_(generator: g);   // off zero, so that A gets a gradient too
        using var a0 = lora.A.detach().clone();
        using var b0 = lora.B.detach().clone();
        using var optimizer = optim.SGD(trainable, 0.1);
        using (var scope = NewDisposeScope()) lora.forward(x).square().mean().backward();
        optimizer.step();
        Assert.False(Bits.Same(a0, lora.A), "A moved");
        Assert.False(Bits.Same(b0, lora.B), "B moved");
        var after = baseLayer.buffers().ToList();
        Assert.Equal(before.Count, after.Count);
        for (int i = 0; i < before.Count; i++) Assert.True(Bits.Same(before[i], after[i]), $"{spelling}: base buffer {i} changed");
    }

    /// <summary>The synthetic model in <paramref name="dir"/>/src and a LoRA adapter trained-looking (B random) on
    /// q/v/down over its <paramref name="baseFormat"/> base, in <paramref name="dir"/>/adapter.</summary>
    static (string Model, string Adapter) SyntheticWithAdapter(TempDir dir, BaseFormat baseFormat)
    {
        string model = SyntheticLlama.Write(Directory.CreateDirectory(dir["src"]).FullName);
        var settings = new LoraSettings(R: 2, Alpha: 4, Dropout: 0, TargetModules: ["q_proj", "v_proj", "down_proj"]);
        using var built = ModelBuilder.Build(model, new ModelBuildOptions(CPU, ScalarType.Float32, baseFormat, NewAdapter: settings, AdapterSeed: 3));
        using var g = new Generator(5);
        using (no_grad())
            foreach (var (_, lora) in AdapterFiles.LoraModules(built.Model))
                lora.B.copy_(randn(lora.B.shape, generator: g) * 0.1);
        AdapterFiles.Save(dir["adapter"], built.Model, built.Adapter!);
        return (model, dir["adapter"]);
    }

    [Theory]
    [InlineData("llm-int8")]
    [InlineData("hqq4-g8")]
    [InlineData("hqq2-g8")]
    [InlineData("ternary")]
    public void Merging_out_of_a_base_folds_the_adapter_into_its_dequantized_weight(string spelling)
    {
        using var dir = Paths.Temp();
        var format = BaseFormat.Parse(spelling);
        var (model, adapter) = SyntheticWithAdapter(dir, format);
        MergedCheckpoint.Write(model, adapter, dir["merged"], new MergeOptions(DType: ScalarType.Float32, BaseFormat: format, AllowNoTokenizer: true));

        using var unmerged = ModelBuilder.Build(model, new ModelBuildOptions(CPU, ScalarType.Float32, format, AdapterDir: adapter));
        using var merged = CheckpointReader.Open(dir["merged"]);
        var loras = AdapterFiles.LoraModules(unmerged.Model).ToDictionary(m => m.path, m => m.lora);
        Assert.Equal(3, loras.Count);
        foreach (var (name, lora) in loras)
        {
            using var expected = LoraMath.MergedWeight(lora.BaseLayer.DequantizeWeight(ScalarType.Float32), lora.A, lora.B, lora.Scaling);
            using var written = merged.Read(name + ".weight");
            Assert.True(Bits.Same(expected, written), name);
        }
        // An unadapted linear is written as its base dequantized: the weight training saw.
        using var k = merged.Read("model.layers.0.self_attn.k_proj.weight");
        using var kBase = unmerged.Model.named_modules().Select(m => m.module).OfType<FrozenLinear>().First(f => f.OutFeatures == 4).DequantizeWeight(ScalarType.Float32);
        Assert.True(Bits.Same(kBase, k));
    }

    [Theory]
    [InlineData("llm-int8-t2")]
    [InlineData("hqq3-g8")]
    [InlineData("ternary")]
    public void Merging_into_a_format_writes_its_layout_and_equals_the_dense_merge_quantized_on_load(string spelling)
    {
        using var dir = Paths.Temp();
        var format = BaseFormat.Parse(spelling);
        var (model, adapter) = SyntheticWithAdapter(dir, new DenseFormat(null));
        MergedCheckpoint.Write(model, adapter, dir["into"], new MergeOptions(Quantization: format, AllowNoTokenizer: true));
        MergedCheckpoint.Write(model, adapter, dir["dense"], new MergeOptions(AllowNoTokenizer: true));
        Assert.Equal(format, QuantizedCheckpoint.StoredFormat(dir["into"]));

        using var stored = ModelBuilder.Build(dir["into"], new ModelBuildOptions(CPU, ScalarType.Float32, new DenseFormat(null)));
        using var onLoad = ModelBuilder.Build(dir["dense"], new ModelBuildOptions(CPU, ScalarType.Float32, format));
        using var ids = tensor(new long[] { 1, 5, 7, 2, 9 }).unsqueeze(0);
        using var a = stored.Model.forward(ids);
        using var b = onLoad.Model.forward(ids);
        Assert.True(Bits.Same(a, b));
    }
}
