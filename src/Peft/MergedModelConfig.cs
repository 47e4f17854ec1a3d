using System.Text.Json;
using System.Text.Json.Nodes;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Quant;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// The config.json of a merged checkpoint: the base model's, with its dtype field set to the written dtype and,
/// for a quantized output, the quantization_config of the format's checkpoint layout (bitsandbytes:
/// BitsAndBytesConfig.to_dict()), so `from_pretrained` rebuilds the Linear4bit layers from our keys.
/// </summary>
public static class MergedModelConfig
{
    public static string Rewrite(string configJson, string source, ScalarType dtype, BaseFormat? quantization, ModelArchitecture architecture)
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
        if (quantization != null) config["quantization_config"] = QuantizedCheckpoint.QuantizationConfig(quantization, name, architecture);
        return config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }

    /// <summary>str(torch.dtype) without "torch.", as transformers writes it.</summary>
    public static string DTypeName(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        _ => throw new ArgumentException($"a merged checkpoint is written in float32, bfloat16 or float16, not {dtype}"),
    };
}
