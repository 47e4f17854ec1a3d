using System.Text.Json.Nodes;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.SmoothQuant;

/// <summary>
/// compressed-tensors' "int-quantized" W8A8 checkpoint layout (what llm-compressor's SmoothQuant + W8A8 recipes save
/// and vLLM loads): <c>{module}.weight</c> int8 (out, in) and <c>{module}.weight_scale</c> (out, 1) (written fp32),
/// with config.json's <c>quantization_config</c> <c>quant_method: "compressed-tensors"</c>, <c>format: "int-quantized"</c>,
/// one config group targeting Linear: weights int8 symmetric per channel (static), input activations int8 symmetric
/// per token (dynamic), the head ignored. Smoothing changes float weights only (the norms' and the linears'), so a
/// stored checkpoint does not record α; it reads back as <c>smoothquant</c>. Other compressed-tensors schemes are
/// refused by name.
/// </summary>
public sealed class W8A8Layout : CheckpointLayout
{
    public static readonly W8A8Layout Instance = new();

    const string ScaleSuffix = "_scale";

    /// <summary>The int8 codes under "{module}.weight", the scale under "{module}.weight_scale".</summary>
    protected override StateKeys StateKeys { get; } = StateKeys.After(withWeight: true, ScaleSuffix);

    W8A8Layout() { }

    public override string Name => "compressed-tensors W8A8";

    public override bool Claims(JsonObject? quantizationConfig) => QuantMethod(quantizationConfig) == "compressed-tensors";

    public override CheckpointLayout Configured(JsonObject? c)
    {
        if (c is null) return this;
        string? format = c["format"] is JsonValue f && f.TryGetValue(out string? s) ? s : null;
        var groups = c["config_groups"] as JsonObject;
        var group = groups?.Count == 1 ? groups.First().Value as JsonObject : null;
        bool ok = format == "int-quantized" && group is not null
            && Scheme(group["weights"] as JsonObject, "channel", dynamic: false)
            && Scheme(group["input_activations"] as JsonObject, "token", dynamic: true);
        if (!ok)
            throw new InvalidDataException("quantization_config (compressed-tensors) is not the W8A8 scheme QLoraNet reads: format int-quantized, one config group, int8 symmetric weights per channel, int8 symmetric dynamic activations per token");
        return this;
    }

    static bool Scheme(JsonObject? o, string strategy, bool dynamic) =>
        o is not null && Int(o, "num_bits") == 8 && Str(o, "type") == "int" && Bool(o, "symmetric") == true
        && Str(o, "strategy") == strategy && (Bool(o, "dynamic") ?? false) == dynamic;

    public override bool IsStored(string weightName, Func<string, bool> contains) => contains(weightName + ScaleSuffix);


    public override void CheckHeader(string weightName, long[] shape, Func<string, (ScalarType DType, long[] Shape)?> header)
    {
        var (dtype, stored) = header(weightName) ?? throw new InvalidDataException($"'{weightName}' is missing beside '{weightName}{ScaleSuffix}'");
        if (dtype != ScalarType.Int8 || !stored.SequenceEqual(shape))
            throw new InvalidDataException($"W8A8 tensor '{weightName}' is {dtype} [{string.Join(", ", stored)}], config.json implies Int8 [{string.Join(", ", shape)}]");
        var (scaleType, scaleShape) = header(weightName + ScaleSuffix)!.Value;
        if (scaleType is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16) || QuantInputChecks.Numel(scaleShape) != shape[0])
            throw new InvalidDataException($"W8A8 tensor '{weightName}{ScaleSuffix}' is {scaleType} [{string.Join(", ", scaleShape)}]; a per-channel scale of [{string.Join(", ", shape)}] is float [{shape[0]}, 1]");
    }

    public override BaseFormat FormatOf(IReadOnlyDictionary<string, Tensor> tensors, string weightName) => new SmoothQuantFormat();

    public override FrozenLinear Read(IReadOnlyDictionary<string, Tensor> tensors, string weightName, long[] shape,
        Device device, ScalarType computeDType, KernelSelection kernels)
    {
        CheckHeader(weightName, shape, key => tensors.TryGetValue(key, out var t) ? (t.dtype, t.shape) : null);
        using var scope = NewDisposeScope();
        var stored = new W8A8Weight(tensors[weightName], tensors[weightName + ScaleSuffix].to(ScalarType.Float32).reshape(-1), shape, ScalarType.BFloat16);
        return new W8A8Linear(stored.To(device), computeDType);
    }

    public override Dictionary<string, Tensor> Write(Tensor dense, BaseFormat format, string weightName) =>
        throw new InvalidOperationException($"{format} is made from calibration activations, not from '{weightName}' alone; `quantize --calibration` writes it");

    public override Dictionary<string, Tensor> WriteLinear(FrozenLinear linear, string weightName)
    {
        var w = (linear as W8A8Linear ?? throw new ArgumentException($"'{weightName}' is a {linear.FormatName} linear, not W8A8")).Stored;
        return new Dictionary<string, Tensor> { [weightName] = w.Codes.alias(), [weightName + ScaleSuffix] = w.Scales.unsqueeze(1) };
    }

    public override JsonObject QuantizationConfig(BaseFormat format, string computeDType, IReadOnlyList<string> denseModules)
    {
        JsonObject Scheme(string strategy, bool dynamic) => new()
        {
            ["num_bits"] = 8, ["type"] = "int", ["symmetric"] = true, ["strategy"] = strategy, ["dynamic"] = dynamic,
            ["group_size"] = null, ["block_structure"] = null, ["actorder"] = null, ["observer"] = dynamic ? "memoryless" : "minmax",
            ["observer_kwargs"] = new JsonObject(),
        };
        return new JsonObject
        {
            ["quant_method"] = "compressed-tensors",
            ["format"] = "int-quantized",
            ["quantization_status"] = "compressed",
            ["config_groups"] = new JsonObject
            {
                ["group_0"] = new JsonObject
                {
                    ["targets"] = new JsonArray("Linear"),
                    ["weights"] = Scheme("channel", false),
                    ["input_activations"] = Scheme("token", true),
                    ["output_activations"] = null,
                },
            },
            ["ignore"] = new JsonArray(denseModules.Select(m => (JsonNode?)m).ToArray()),
            ["kv_cache_scheme"] = null,
        };
    }

    static int? Int(JsonObject o, string key) => o[key] is JsonValue v && v.TryGetValue(out int i) ? i : null;
    static bool? Bool(JsonObject o, string key) => o[key] is JsonValue v && v.TryGetValue(out bool b) ? b : null;
    static string? Str(JsonObject o, string key) => o[key] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
}
