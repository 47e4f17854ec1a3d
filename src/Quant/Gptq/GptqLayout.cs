using System.Text.Json.Nodes;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Gptq;

/// <summary>
/// AutoGPTQ's (and GPTQModel's, transformers' and peft's) checkpoint layout for a GPTQ linear "{module}": the tensors
/// <c>{module}.qweight</c> int32 (in·bits/32, out), <c>{module}.qzeros</c> int32 (groups, out·bits/32),
/// <c>{module}.scales</c> fp16 (groups, out), <c>{module}.g_idx</c> int32 (in) (and <c>{module}.bias</c>, which the model
/// loader reads as any bias), no <c>{module}.weight</c>; config.json's <c>quantization_config</c> with
/// <c>quant_method: "gptq"</c>, <c>bits</c>, <c>group_size</c> (-1 = per row), <c>desc_act</c>, <c>sym</c>,
/// <c>checkpoint_format</c>, and the same object as <c>quantize_config.json</c> (AutoGPTQ reads that file). We write
/// the v1 format (<c>checkpoint_format: "gptq"</c>, zero points stored minus one) and read v1 and GPTQModel's
/// <c>gptq_v2</c> (stored as is). A missing g_idx is i / group_size, unless desc_act says the columns were permuted.
/// Sizes that are not multiples of 32 (the tiny test model's 688) are packed by the same bit-stream rule
/// (ceil(n·bits/32) words); AutoGPTQ's own shape formula (n / 32 · bits) cannot hold them, so such files load here only.
/// </summary>
public sealed class GptqLayout : CheckpointLayout
{
    /// <summary>The unconfigured detector the registry lists; <see cref="Configured"/> reads a checkpoint's settings.</summary>
    public static readonly GptqLayout Instance = new(null);

    protected override StateKeys StateKeys { get; } = StateKeys.Beside(withWeight: false, "qweight", "qzeros", "scales", "g_idx");

    readonly Settings? _settings;

    /// <summary>What a checkpoint's quantization_config says: bits, group size (0 = per row), desc_act, sym, v1 or v2.</summary>
    public sealed record Settings(int Bits, int GroupSize, bool DescAct, bool Sym, int ZeroOffset);

    GptqLayout(Settings? settings) => _settings = settings;

    public override string Name => "GPTQ (AutoGPTQ)";

    /// <summary>The settings read from the checkpoint's config (null on the unconfigured detector).</summary>
    public Settings? Config => _settings;

    public override bool Claims(JsonObject? quantizationConfig) => QuantMethod(quantizationConfig) == "gptq";

    public override CheckpointLayout Configured(JsonObject? quantizationConfig)
    {
        if (quantizationConfig is null) return this;
        int bits = Int(quantizationConfig, "bits") ?? throw new InvalidDataException("quantization_config (quant_method gptq) has no 'bits'");
        if (bits is not (2 or 3 or 4 or 8)) throw new InvalidDataException($"quantization_config 'bits' is {bits}; GPTQ checkpoints hold 2, 3, 4 or 8 bits");
        int group = Int(quantizationConfig, "group_size") ?? -1;
        if (group == 0 || group < -1) throw new InvalidDataException($"quantization_config 'group_size' is {group}; it must be positive or -1");
        string format = quantizationConfig["checkpoint_format"] is JsonValue f && f.TryGetValue(out string? s) ? s.ToLowerInvariant() : "gptq";
        int offset = format switch
        {
            "gptq" => GptqWeight.V1ZeroOffset,
            "gptq_v2" => 0,
            _ => throw new InvalidDataException($"quantization_config 'checkpoint_format' is '{format}'; QLoraNet reads GPTQ checkpoints in the gptq (v1) and gptq_v2 formats"),
        };
        return new GptqLayout(new Settings(bits, group == -1 ? 0 : group, Bool(quantizationConfig, "desc_act"), Bool(quantizationConfig, "sym", true), offset));
    }

    public override bool IsStored(string weightName, Func<string, bool> contains) => contains(Prefix(weightName) + "qweight");


    public override void CheckHeader(string weightName, long[] shape, Func<string, (ScalarType DType, long[] Shape)?> header)
    {
        var settings = Require(weightName);
        string p = Prefix(weightName);
        long outFeatures = shape[0], inFeatures = shape[1];
        int groups = Groups(settings, inFeatures, weightName);
        Expect(p + "qweight", header, [ScalarType.Int32], [GptqPacking.Words(inFeatures, settings.Bits), outFeatures], shape, settings.Bits);
        Expect(p + "qzeros", header, [ScalarType.Int32], [groups, GptqPacking.Words(outFeatures, settings.Bits)], shape, settings.Bits);
        Expect(p + "scales", header, [ScalarType.Float16, ScalarType.BFloat16, ScalarType.Float32], [groups, outFeatures], shape, settings.Bits);
        if (header(p + "g_idx") is null)
        {
            if (settings.DescAct)
                throw new InvalidDataException($"'{p}g_idx' is missing but quantization_config says desc_act: true (columns reordered); the checkpoint is incomplete, re-download or re-quantize it");
        }
        else Expect(p + "g_idx", header, [ScalarType.Int32, ScalarType.Int64], [inFeatures], shape, settings.Bits);
    }

    public override BaseFormat FormatOf(IReadOnlyDictionary<string, Tensor> tensors, string weightName)
    {
        var s = Require(weightName);
        return new GptqFormat(s.Bits, s.GroupSize, s.DescAct);
    }

    public override FrozenLinear Read(IReadOnlyDictionary<string, Tensor> tensors, string weightName, long[] shape,
        Device device, ScalarType computeDType, KernelSelection kernels)
    {
        using var scope = NewDisposeScope();
        var weight = FromTensors(tensors, weightName, shape);
        return new GptqLinear(weight.To(device), computeDType); // the module detaches its buffers from this scope
    }

    /// <summary>The stored weight of <paramref name="weightName"/>, checked against the dense <paramref name="shape"/> [out, in].</summary>
    public GptqWeight FromTensors(IReadOnlyDictionary<string, Tensor> tensors, string weightName, long[] shape)
    {
        var settings = Require(weightName);
        string p = Prefix(weightName);
        CheckHeader(weightName, shape, key => tensors.TryGetValue(key, out var t) ? (t.dtype, t.shape) : null);
        int groups = Groups(settings, shape[1], weightName);
        var gIdx = tensors.TryGetValue(p + "g_idx", out var stored) ? stored.to(ScalarType.Int32)
            : arange(shape[1], ScalarType.Int32).div(settings.GroupSize == 0 ? shape[1] : settings.GroupSize, rounding_mode: RoundingMode.floor);
        using (var low = gIdx.min())
        using (var high = gIdx.max())
            if (low.item<int>() < 0 || high.item<int>() >= groups)
                throw new InvalidDataException($"'{p}g_idx' holds group {(low.item<int>() < 0 ? low.item<int>() : high.item<int>())}; there are {groups} groups");
        var format = new GptqFormat(settings.Bits, settings.GroupSize, settings.DescAct);
        return new GptqWeight(format, tensors[p + "qweight"], tensors[p + "qzeros"], tensors[p + "scales"].to(ScalarType.Float16), gIdx,
            settings.ZeroOffset, shape, ScalarType.Float16);
    }

    public override Dictionary<string, Tensor> Write(Tensor dense, BaseFormat format, string weightName) =>
        throw new InvalidOperationException($"{format} is made from calibration activations, not from '{weightName}' alone; `quantize --calibration` writes it");

    public override Dictionary<string, Tensor> WriteLinear(FrozenLinear linear, string weightName)
    {
        var w = (linear as GptqLinear ?? throw new ArgumentException($"'{weightName}' is a {linear.FormatName} linear, not GPTQ")).Stored;
        if (w.ZeroOffset != GptqWeight.V1ZeroOffset)
            throw new ArgumentException($"'{weightName}' holds gptq_v2 zero points; QLoraNet writes the v1 format only");
        string p = Prefix(weightName);
        return new Dictionary<string, Tensor>
        {
            [p + "qweight"] = w.QWeight.alias(), [p + "qzeros"] = w.QZeros.alias(), [p + "scales"] = w.Scales.alias(), [p + "g_idx"] = w.GIdx.alias(),
        };
    }

    /// <summary>AutoGPTQ's BaseQuantizeConfig.to_dict(), which transformers' GPTQConfig also reads from config.json.</summary>
    public override JsonObject QuantizationConfig(BaseFormat format, string computeDType, IReadOnlyList<string> denseModules)
    {
        var f = format as GptqFormat ?? throw new ArgumentException($"{Name} stores GPTQ weights, not {format}");
        return new JsonObject
        {
            ["bits"] = f.Bits,
            ["group_size"] = f.ConfigGroupSize,
            ["damp_percent"] = GptqSolver.DefaultPercDamp,
            ["desc_act"] = f.ActOrder,
            ["static_groups"] = false,
            ["sym"] = true,
            ["true_sequential"] = true,
            ["model_name_or_path"] = null,
            ["model_file_base_name"] = null,
            ["quant_method"] = "gptq",
            ["checkpoint_format"] = "gptq",
        };
    }

    public override (string FileName, JsonObject Content)? SidecarFile(BaseFormat format) =>
        ("quantize_config.json", QuantizationConfig(format, "float16", []));

    Settings Require(string weightName) => _settings
        ?? throw new InvalidDataException($"'{Prefix(weightName)}qweight' is a GPTQ tensor but the checkpoint has no quantization_config (config.json) or quantize_config.json saying its bits and group size");

    static int Groups(Settings s, long inFeatures, string weightName)
    {
        if (s.GroupSize == 0) return 1;
        if (inFeatures % s.GroupSize != 0)
            throw new InvalidDataException($"'{Prefix(weightName)}qweight': group_size {s.GroupSize} does not divide in_features {inFeatures}");
        return (int)(inFeatures / s.GroupSize);
    }

    static void Expect(string key, Func<string, (ScalarType DType, long[] Shape)?> header, ScalarType[] dtypes, long[] expected, long[] dense, int bits)
    {
        var (dtype, shape) = header(key) ?? throw new InvalidDataException($"'{key}' is missing; a GPTQ linear needs qweight, qzeros, scales (and g_idx)");
        if (!dtypes.Contains(dtype) || !shape.SequenceEqual(expected))
            throw new InvalidDataException($"GPTQ tensor '{key}' is {dtype} [{string.Join(", ", shape)}], but a {bits}-bit [{string.Join(", ", dense)}] weight needs {dtypes[0]} [{string.Join(", ", expected)}]");
    }

    static int? Int(JsonObject o, string key) => o[key] is JsonValue v && v.TryGetValue(out int i) ? i : null;

    static bool Bool(JsonObject o, string key, bool fallback = false) => o[key] is JsonValue v && v.TryGetValue(out bool b) ? b : fallback;

    static string Prefix(string weightName) => weightName.EndsWith("weight", StringComparison.Ordinal) ? weightName[..^"weight".Length] : weightName + ".";
}
