using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Tests.Models.Families;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>
/// A native BitNet b1.58 checkpoint (tests/fixtures/families/bitnet: packed ternary weights, weight_scale, 8-bit
/// activations, squared ReLU, sub-norms; its transformers parity is in <see cref="FamilyParityTests"/>) as a frozen
/// base that LoRA trains on (issue 17): every decoder linear loads as a <see cref="TernaryLinear"/> whatever base
/// format was asked for, a fresh adapter computes the base exactly, training moves only A and B and the loss falls;
/// the same model stored with float linears is refused under any base but ternary.
/// </summary>
[Trait("tier", "parity")]
public class BitNetLoraTests
{
    static readonly LoraSettings AllLinear = FamilyLora.AllLinear;

    static string Dir => FamilyReference.DirOf("bitnet");

    static BuiltModel Build(BaseFormat format, LoraSettings? lora = null, string? dir = null) => FamilyLora.Build("bitnet", format, lora, dir: dir);

    static Tensor Logits(LlamaForCausalLM model) => FamilyLora.Logits(model, "bitnet");

    [Fact]
    public void The_packed_checkpoint_loads_ternary_linears_and_the_sub_norms_under_their_checkpoint_names()
    {
        var e = Assert.Throws<ArgumentException>(() => Build(BaseFormat.Parse("nf4-dq")));
        Assert.Contains("already quantized as ternary", e.Message);
        using var built = Build(new TernaryFormat());
        var linears = built.Model.modules().OfType<TernaryLinear>().ToList();
        Assert.Equal(7 * built.Architecture.NumLayers, linears.Count);
        var names = built.Model.named_parameters().Select(p => p.name).ToHashSet();
        Assert.Contains("model.layers.0.self_attn.attn_sub_norm.weight", names);
        Assert.Contains("model.layers.2.mlp.ffn_sub_norm.weight", names);
        Assert.True(built.Architecture.TernaryLinears);
        Assert.Equal(Activation.ReluSquared, built.Architecture.Activation);
    }

    [Fact]
    public void A_fresh_adapter_computes_the_base_exactly()
    {
        using var plain = Build(new TernaryFormat());
        using var adapted = Build(new TernaryFormat(), AllLinear);
        adapted.Model.eval();
        Assert.All(adapted.Model.modules().OfType<LoraLinear>(), l => Assert.IsType<TernaryLinear>(l.BaseLayer));
        using var expected = Logits(plain.Model);
        using var actual = Logits(adapted.Model);
        Assert.Equal(0.0, (expected - actual).abs().max().item<float>());
    }

    [Fact]
    public void Lora_trains_on_the_ternary_base_changing_only_a_and_b_and_the_loss_falls()
    {
        using var built = Build(new TernaryFormat(), AllLinear);
        var model = built.Model;
        var trainable = FamilyLora.Trainable(model);
        Assert.Equal(2 * 7 * built.Architecture.NumLayers, trainable.Count);
        Assert.All(trainable, p => Assert.Matches(@"\.lora_[AB]\.", p.Name));
        var frozenBefore = model.state_dict().Where(kv => !kv.Key.Contains(".lora_")).ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var losses = FamilyLora.Train(model, trainable, "bitnet");
        Assert.True(losses[^1] < losses[0] - 0.2, $"losses {string.Join(", ", losses.Select(l => l.ToString("F3")))}");
        foreach (var (name, before) in frozenBefore)
            Assert.True(before.allclose(model.state_dict()[name], rtol: 0, atol: 0), $"frozen '{name}' changed");
        Assert.Contains(trainable, p => p.Name.Contains("lora_B") && p.Parameter.abs().max().item<float>() > 0);
    }

    [Fact]
    public void Float_bitnet_weights_load_only_as_ternary()
    {
        // The same model with its linears stored dense (as the bf16 master checkpoints are): nf4-dq would compute a
        // different model (no 8-bit activations, no ternary weights), so it is refused naming the linear and the fix.
        using var tmp = Paths.Temp();
        using (var ckpt = CheckpointReader.Open(Dir))
        {
            var tensors = new Dictionary<string, Tensor>();
            foreach (var name in ckpt.Names.Where(n => !n.EndsWith(".weight_scale", StringComparison.Ordinal)))
            {
                var raw = ckpt.Read(name);
                tensors[name] = ckpt.Contains(name + "_scale")
                    ? new TernaryWeight(raw, ckpt.Read(name + "_scale").reshape(1), [raw.shape[0] * 4, raw.shape[1]], ScalarType.BFloat16).Dequantize(ScalarType.BFloat16)
                    : raw;
            }
            SafeTensors.Write(tmp["model.safetensors"], tensors);
        }
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(Dir, "config.json")))!.AsObject();
        config.Remove("quantization_config");
        File.WriteAllText(tmp["config.json"], config.ToJsonString());

        var e = Assert.Throws<NotSupportedException>(() => Build(BaseFormat.Parse("nf4-dq"), dir: tmp.Path));
        Assert.Contains("'model.layers.0.self_attn.q_proj' loads as nf4-dq", e.Message);
        Assert.Contains("ternary", e.Message);
        // A calibrated base (made layer by layer from activations) is refused the same way, before any calibration.
        using var ids = zeros(2, 8, ScalarType.Int64);
        var calibrated = Assert.Throws<NotSupportedException>(() => ModelBuilder.Build(tmp.Path,
            new ModelBuildOptions(CPU, ScalarType.Float32, BaseFormat.Parse("gptq4"), Calibration: new QLoraNet.Models.Calibration.CalibrationSet(ids))));
        Assert.Contains("BitNet b1.58 linears", calibrated.Message);
        Assert.Contains("ternary", calibrated.Message);
        using var ternary = Build(new TernaryFormat(), dir: tmp.Path);
        Assert.Equal(7 * ternary.Architecture.NumLayers, ternary.Model.modules().OfType<TernaryLinear>().Count());
    }

    [Fact]
    public void Merge_reads_the_stored_ternary_codes_and_writes_bitnet_online_or_packed()
    {
        using var tmp = Paths.Temp();
        string adapter = FamilyLora.NonZeroAdapter("bitnet", tmp["adapter"]);
        var e = Assert.Throws<ArgumentException>(() => MergedCheckpoint.Write(Dir, adapter, tmp["nf4"], new MergeOptions(BaseFormat: BaseFormat.Parse("nf4-dq"))));
        Assert.Contains("is stored as ternary", e.Message);

        var dense = MergedCheckpoint.Write(Dir, adapter, tmp["dense"], new MergeOptions(DType: ScalarType.Float32));
        Assert.Equal(7 * 3, dense.MergedModules);
        const string down = "model.layers.1.mlp.down_proj";
        using (var source = CheckpointReader.Open(Dir))
        using (var merged = CheckpointReader.Open(tmp["dense"]))
        using (var factors = SafeTensorsFile.Open(Path.Combine(adapter, AdapterFiles.WeightsFileName)))
        {
            Assert.DoesNotContain(merged.Names, n => n.EndsWith("weight_scale", StringComparison.Ordinal));
            // W' = dequant(stored codes) + (alpha/r)·B·A, from the packed bytes themselves (no second ternarisation)
            using var packed = source.Read(down + ".weight");
            using var scale = source.Read(down + ".weight_scale");
            using var w = new TernaryWeight(packed, scale.reshape(1), [128, 320], ScalarType.BFloat16).Dequantize(ScalarType.Float32);
            using var expected = LoraMath.MergedWeight(w, factors.Read(AdapterKeys.ToPeft(down, AdapterKeys.A)), factors.Read(AdapterKeys.ToPeft(down, AdapterKeys.B)), 8.0 / 4);
            using var actual = merged.Read(down + ".weight");
            Assert.Equal(0f, (expected - actual).abs().max().item<float>());
        }
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(tmp["dense/config.json"]))!;
        Assert.Equal("online", (string?)config["quantization_config"]!["quantization_mode"]);

        // Packed output: the same ternarisation the dense output gets at load, so both compute the same logits.
        MergedCheckpoint.Write(Dir, adapter, tmp["packed"], new MergeOptions(DType: ScalarType.Float32, Quantization: new TernaryFormat()));
        Assert.Equal("ternary", QuantizedCheckpoint.StoredFormat(tmp["packed"])!.ToString());
        using var fromDense = Build(new TernaryFormat(), dir: tmp["dense"]);
        using var fromPacked = Build(new TernaryFormat(), dir: tmp["packed"]);
        using var a = Logits(fromDense.Model);
        using var b = Logits(fromPacked.Model);
        Assert.Equal(0f, (a - b).abs().max().item<float>());
    }
}
