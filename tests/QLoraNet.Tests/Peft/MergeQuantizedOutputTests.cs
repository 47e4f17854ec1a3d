using System.Text.Json;
using QLoraNet.Formats;
using QLoraNet.Peft;
using QLoraNet.Quant;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>`--quantization nf4-dq`: merged projections re-quantized and written under bitsandbytes' keys.</summary>
[Trait("tier", "unit")]
public class MergeQuantizedOutputTests
{
    static Dictionary<string, Tensor> Module(CheckpointReader ckpt, string prefix) =>
        ckpt.Names.Where(n => n.StartsWith(prefix + "weight", StringComparison.Ordinal)).ToDictionary(n => n, ckpt.Read);

    [Fact]
    public void Projections_are_bitsandbytes_nf4_of_the_merged_weight_and_the_rest_stays_dense()
    {
        using var tmp = Paths.Temp();
        string adapter = MergeTestAdapter.Create(tmp["adapter"]);
        var spec = (FourBitFormat)BaseFormat.Parse("nf4-dq");
        MergedCheckpoint.Write(Paths.TinyModel, adapter, tmp["merged"], new MergeOptions(Quantization: spec));

        using var ckpt = CheckpointReader.Open(tmp["merged"]);
        using var original = CheckpointReader.Open(Paths.TinyModel);
        using var factors = SafeTensorsFile.Open(Path.Combine(adapter, AdapterFiles.WeightsFileName));
        const string q = "model.layers.0.self_attn.q_proj.";
        Assert.Equal(ScalarType.Byte, ckpt.Info(q + "weight").DType);
        Assert.Equal(new long[] { 256 * 256 / 2, 1 }, ckpt.Info(q + "weight").Shape);
        Assert.Equal(new long[] { 256 * 256 / 64 }, ckpt.Info(q + "weight.absmax").Shape);      // uint8 codes: double-quantized
        Assert.Equal(new long[] { 4 }, ckpt.Info(q + "weight.nested_absmax").Shape);           // 1024 blocks / 256
        Assert.True(ckpt.Contains(q + "weight.quant_state.bitsandbytes__nf4"));
        Assert.Equal(ScalarType.BFloat16, ckpt.Info("model.norm.weight").DType);
        Assert.Equal(ScalarType.BFloat16, ckpt.Info("model.embed_tokens.weight").DType);
        Assert.Equal(7 * 4 * 6 + 9 + 1, ckpt.Names.Count);   // 6 tensors per projection, 9 norms, the embedding

        // adapted: nf4-dq of (W + 2·B·A) rounded to bf16; unadapted: nf4-dq of W
        var expected = LoraMath.MergedWeight(original.Read(q + "weight").to(ScalarType.Float32),
            factors.Read(AdapterKeys.ToPeft("model.layers.0.self_attn.q_proj", AdapterKeys.A)),
            factors.Read(AdapterKeys.ToPeft("model.layers.0.self_attn.q_proj", AdapterKeys.B)), scaling: 16.0 / 8).to(ScalarType.BFloat16);
        AssertQuantizedFrom(expected, FourBitCheckpoint.FromTensors(Module(ckpt, q), q));
        const string up = "model.layers.3.mlp.up_proj.";
        AssertQuantizedFrom(original.Read(up + "weight"), FourBitCheckpoint.FromTensors(Module(ckpt, up), up));

        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(tmp["merged"], "config.json")));
        var qc = config.RootElement.GetProperty("quantization_config");
        Assert.Equal("bitsandbytes", qc.GetProperty("quant_method").GetString());
        Assert.Equal("nf4", qc.GetProperty("bnb_4bit_quant_type").GetString());
        Assert.True(qc.GetProperty("bnb_4bit_use_double_quant").GetBoolean());
        Assert.True(qc.GetProperty("load_in_4bit").GetBoolean());
        Assert.Equal("bfloat16", qc.GetProperty("bnb_4bit_compute_dtype").GetString());
    }

    [Fact]
    public void The_4bit_output_loads_and_equals_the_bf16_merge_quantized_on_load()
    {
        using var tmp = Paths.Temp();
        string adapter = MergeTestAdapter.Create(tmp["adapter"]);
        var nf4dq = BaseFormat.Parse("nf4-dq");
        MergedCheckpoint.Write(Paths.TinyModel, adapter, tmp["nf4"], new MergeOptions(Quantization: (FourBitFormat)nf4dq));
        MergedCheckpoint.Write(Paths.TinyModel, adapter, tmp["bf16"], new MergeOptions());

        using var stored = MergeTestAdapter.LoadBase(dir: tmp["nf4"]);                 // codes read back
        using var onLoad = MergeTestAdapter.LoadBase(nf4dq, dir: tmp["bf16"]);         // bf16 merge, quantized on load
        using var a = MergeTestAdapter.Logits(stored);
        using var b = MergeTestAdapter.Logits(onLoad);
        Assert.True(Bits.Same(a, b));
    }

    static void AssertQuantizedFrom(Tensor dense, FourBitWeight written)
    {
        Assert.Equal(ScalarType.BFloat16, written.DType);
        Assert.True(written.IsDoubleQuantized);
        var reference = FourBitWeight.Quantize(dense, FourBitType.Nf4, doubleQuant: true);
        Assert.True(Bits.Same(reference.Packed, written.Packed));
        Assert.True(Bits.Same(reference.Dequantize(ScalarType.Float32), written.Dequantize(ScalarType.Float32)));
    }
}
