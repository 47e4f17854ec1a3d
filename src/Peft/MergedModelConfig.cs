using System.Text.Json;
using System.Text.Json.Nodes;
using QLoraNet.Quant;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// The config.json of a merged checkpoint: the base model's, with its dtype field set to the written dtype and,
/// for a 4-bit output, the quantization_config transformers writes for a bitsandbytes model
/// (BitsAndBytesConfig.to_dict()), so `from_pretrained` rebuilds the Linear4bit layers from our keys.
/// </summary>
public static class MergedModelConfig
{
    public static string Rewrite(string configJson, string source, ScalarType dtype, FourBitSpec? quantization)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(configJson); }
        catch (JsonException e) { throw new InvalidDataException($"{source}: not valid JSON ({e.Message.Split('.')[0]})"); }
        if (root is not JsonObject config) throw new InvalidDataException($"{source}: expected a JSON object");

        // transformers 5 names the field "dtype", earlier releases "torch_dtype"; keep whichever the file uses.
        string name = DTypeName(dtype);
        bool any = false;
        foreach (var key in new[] { "torch_dtype", "dtype" })
            if (config.ContainsKey(key)) { config[key] = name; any = true; }
        if (!any) config["torch_dtype"] = name;

        config.Remove("quantization_config");
        if (quantization != null) config["quantization_config"] = BitsAndBytes(quantization, name);
        return config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }

    /// <summary>BitsAndBytesConfig(load_in_4bit=True, ...).to_dict(), keys sorted as transformers serialises them.</summary>
    static JsonObject BitsAndBytes(FourBitSpec q, string computeDType) => new()
    {
        ["_load_in_4bit"] = true,
        ["_load_in_8bit"] = false,
        ["bnb_4bit_compute_dtype"] = computeDType,
        ["bnb_4bit_quant_storage"] = "uint8",
        ["bnb_4bit_quant_type"] = FourBitCodebook.Name(q.Type),
        ["bnb_4bit_use_double_quant"] = q.DoubleQuant,
        ["llm_int8_enable_fp32_cpu_offload"] = false,
        ["llm_int8_has_fp16_weight"] = false,
        ["llm_int8_skip_modules"] = new JsonArray("lm_head"),   // the head stays dense (DecoderProjections)
        ["llm_int8_threshold"] = 6.0,
        ["load_in_4bit"] = true,
        ["load_in_8bit"] = false,
        ["quant_method"] = "bitsandbytes",
    };

    /// <summary>str(torch.dtype) without "torch.", as transformers writes it.</summary>
    public static string DTypeName(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        _ => throw new ArgumentException($"a merged checkpoint is written in float32, bfloat16 or float16, not {dtype}"),
    };
}
