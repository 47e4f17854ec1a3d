using System.Globalization;
using System.Text.Json.Nodes;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// bitsandbytes' Linear8bitLt in a state dict (nn/modules.py, _save_to_state_dict): <c>{module}.weight</c> int8
/// [out, in] (the codes CB), <c>{module}.SCB</c> fp32 [out] (row absmax) and <c>{module}.weight_format</c> uint8
/// scalar 0 ("row", the only format bitsandbytes still writes), with the config.json block transformers writes for
/// <c>BitsAndBytesConfig(load_in_8bit=True)</c>, whose <c>llm_int8_threshold</c> is the one thing the tensors do not
/// hold. The layout of <see cref="LlmInt8Format"/>.
/// </summary>
public sealed class BitsAndBytesEightBitLayout : CheckpointLayout
{
    public static readonly BitsAndBytesEightBitLayout Instance = new();

    const string Scb = "SCB", WeightFormat = "weight_format";

    /// <summary>The int8 codes under "{module}.weight", the absmax "{module}.SCB" and "{module}.weight_format" beside it.</summary>
    protected override StateKeys StateKeys { get; } = StateKeys.Beside(withWeight: true, Scb, WeightFormat);

    BitsAndBytesEightBitLayout() { }

    public override string Name => "bitsandbytes 8-bit";

    static string Prefix(string weightName) => weightName[..^"weight".Length];

    /// <summary>bitsandbytes' quant_method (or none); the other layouts' checkpoints are told apart by theirs.</summary>
    public override bool Claims(JsonObject? quantizationConfig) => QuantMethod(quantizationConfig) is null or "bitsandbytes";

    public override bool IsStored(string weightName, Func<string, bool> contains) =>
        contains(Prefix(weightName) + Scb) || contains(Prefix(weightName) + WeightFormat);


    public override void CheckHeader(string weightName, long[] shape, Func<string, (ScalarType DType, long[] Shape)?> header)
    {
        string p = Prefix(weightName);
        var (dtype, stored) = header(weightName) ?? throw new InvalidDataException($"'{weightName}' is missing beside its 8-bit state tensors");
        if (header(p + Scb) is not { } scb)
            throw new InvalidDataException($"int8 tensor '{weightName}' has no '{p}{Scb}' (its per-row absmax); the bitsandbytes 8-bit checkpoint is incomplete, re-save it or quantize the original weights");
        if (dtype != ScalarType.Int8 || !stored.SequenceEqual(shape))
            throw new InvalidDataException($"8-bit tensor '{weightName}' is {dtype} [{string.Join(", ", stored)}], but config.json implies int8 [{string.Join(", ", shape)}]");
        if (scb.DType != ScalarType.Float32 || QuantInputChecks.Numel(scb.Shape) != shape[0])
            throw new InvalidDataException($"'{p}{Scb}' is {scb.DType} [{string.Join(", ", scb.Shape)}], but the weight has {shape[0]} rows (fp32 [{shape[0]}] expected)");
    }

    public override BaseFormat FormatOf(IReadOnlyDictionary<string, Tensor> tensors, string weightName) => new LlmInt8Format();

    public override BaseFormat FormatOf(IReadOnlyDictionary<string, Tensor> tensors, string weightName, JsonObject? quantizationConfig) =>
        new LlmInt8Format(Threshold(quantizationConfig));

    public override FrozenLinear Read(IReadOnlyDictionary<string, Tensor> tensors, string weightName, long[] shape,
        Device device, ScalarType computeDType, KernelSelection kernels) =>
        Read(tensors, weightName, shape, device, computeDType, kernels, null);

    public override FrozenLinear Read(IReadOnlyDictionary<string, Tensor> tensors, string weightName, long[] shape,
        Device device, ScalarType computeDType, KernelSelection kernels, JsonObject? quantizationConfig)
    {
        using var scope = NewDisposeScope();
        string p = Prefix(weightName);
        if (!tensors.TryGetValue(p + Scb, out var scb))
            throw new InvalidDataException($"int8 tensor '{weightName}' has no '{p}{Scb}' (its per-row absmax); the bitsandbytes 8-bit checkpoint is incomplete");
        var codes = tensors[weightName];
        if (codes.dtype != ScalarType.Int8 || !codes.shape.SequenceEqual(shape) || scb.dtype != ScalarType.Float32 || scb.numel() != shape[0])
            throw new InvalidDataException($"8-bit tensors '{weightName}' {codes.dtype} [{string.Join(", ", codes.shape)}] and '{p}{Scb}' {scb.dtype} [{string.Join(", ", scb.shape)}] do not fit config.json's [{string.Join(", ", shape)}]");
        if (tensors.TryGetValue(p + WeightFormat, out var format) && format.to(ScalarType.Int64).item<long>() != 0)
            throw new InvalidDataException($"'{p}{WeightFormat}' is {format.to(ScalarType.Int64).item<long>()}; only bitsandbytes' row-major format (0) is read (older col32/turing/ampere layouts are not)");
        var stored = new LlmInt8Weight(codes, scb.reshape(shape[0]), shape, ScalarType.Float16, (float)Threshold(quantizationConfig));
        return new LlmInt8Linear(stored.To(device), computeDType, kernels); // the module detaches its buffers from this scope
    }

    public override Dictionary<string, Tensor> Write(Tensor dense, BaseFormat format, string weightName)
    {
        var f = format as LlmInt8Format ?? throw new ArgumentException($"{Name} stores llm-int8 weights, not {format}");
        var w = LlmInt8Weight.Quantize(dense, (float)f.Threshold, weightName);
        string p = Prefix(weightName);
        return new Dictionary<string, Tensor>
        {
            [weightName] = w.Codes,
            [p + Scb] = w.Scb,
            [p + WeightFormat] = tensor((byte)0, ScalarType.Byte),
        };
    }

    /// <summary>
    /// transformers' BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=t, llm_int8_skip_modules=[head]).to_dict(),
    /// keys sorted as it serialises them. The threshold is written with a decimal point ("6.0"): transformers refuses
    /// an llm_int8_threshold that Python reads as an int.
    /// </summary>
    public override JsonObject QuantizationConfig(BaseFormat format, string computeDType, IReadOnlyList<string> denseModules)
    {
        var f = format as LlmInt8Format ?? throw new ArgumentException($"{Name} stores llm-int8 weights, not {format}");
        return new JsonObject
        {
            ["_load_in_4bit"] = false,
            ["_load_in_8bit"] = true,
            ["bnb_4bit_compute_dtype"] = computeDType,
            ["bnb_4bit_quant_storage"] = "uint8",
            ["bnb_4bit_quant_type"] = "fp4",
            ["bnb_4bit_use_double_quant"] = false,
            ["llm_int8_enable_fp32_cpu_offload"] = false,
            ["llm_int8_has_fp16_weight"] = false,
            ["llm_int8_skip_modules"] = new JsonArray(denseModules.Select(m => (JsonNode?)m).ToArray()),
            ["llm_int8_threshold"] = JsonValue.Create(decimal.Parse(PythonFloat.Repr(f.Threshold), NumberStyles.Float, CultureInfo.InvariantCulture)),
            ["load_in_4bit"] = false,
            ["load_in_8bit"] = true,
            ["quant_method"] = "bitsandbytes",
        };
    }

    /// <summary>quantization_config.llm_int8_threshold (6.0 when absent, as transformers defaults it); 0 or below is refused.</summary>
    static double Threshold(JsonObject? config)
    {
        if (config?["llm_int8_threshold"] is not JsonValue v) return LlmInt8Format.DefaultThreshold;
        if (!v.TryGetValue(out double t))
            throw new InvalidDataException($"config.json: quantization_config.llm_int8_threshold is {v.ToJsonString()}, not a number");
        if (LlmInt8Format.ThresholdProblem(t) is { } problem)
            throw new InvalidDataException($"config.json: quantization_config.llm_int8_threshold {problem} (bitsandbytes' decomposition threshold; transformers' default is 6.0)");
        return t;
    }
}
