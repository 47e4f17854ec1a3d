using System.Text.Json.Nodes;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// bitsandbytes' Linear4bit in a state dict (<see cref="FourBitCheckpoint"/>): packed uint8 `weight`,
/// `weight.absmax`, `weight.quant_map`, [`weight.nested_absmax`, `weight.nested_quant_map`],
/// `weight.quant_state.bitsandbytes__nf4|fp4`, and the config.json block transformers writes for
/// `BitsAndBytesConfig(load_in_4bit=True)`. The layout of <see cref="FourBitFormat"/>.
/// </summary>
public sealed class BitsAndBytesFourBitLayout : CheckpointLayout
{
    public static readonly BitsAndBytesFourBitLayout Instance = new();

    const string QuantStateInfix = ".quant_state.bitsandbytes__";

    /// <summary>Suffixes (after the "...weight" key) of the tensors that hold a 4-bit weight's quantization state.</summary>
    protected override StateKeys StateKeys { get; } = StateKeys.After(withWeight: true,
        ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", QuantStateInfix + "nf4", QuantStateInfix + "fp4");

    BitsAndBytesFourBitLayout() { }

    public override string Name => "bitsandbytes 4-bit";

    /// <summary>bitsandbytes' keys are its own; a config that names another method (gptq, awq) never holds them.</summary>
    public override bool Claims(JsonObject? quantizationConfig) => QuantMethod(quantizationConfig) is null or "bitsandbytes";

    public override bool IsStored(string weightName, Func<string, bool> contains) => StateKeys.Suffixes.Any(s => contains(weightName + s));


    public override void CheckHeader(string weightName, long[] shape, Func<string, (ScalarType DType, long[] Shape)?> header)
    {
        if (header(weightName + QuantStateInfix + "nf4") is null && header(weightName + QuantStateInfix + "fp4") is null)
            throw new InvalidDataException($"'{weightName}' has 4-bit state tensors but no '{weightName}{QuantStateInfix}nf4' (or __fp4); the checkpoint is incomplete, re-run `quantize` from the original weights");
        long packedBytes = (QuantInputChecks.Numel(shape) + 1) / 2;
        var (dtype, stored) = header(weightName) ?? throw new InvalidDataException($"'{weightName}' is missing beside its 4-bit state tensors");
        if (dtype != ScalarType.Byte || QuantInputChecks.Numel(stored) != packedBytes)
            throw new InvalidDataException($"4-bit tensor '{weightName}' is {dtype} [{string.Join(", ", stored)}], but config.json implies [{string.Join(", ", shape)}] = {packedBytes} packed uint8 bytes");
    }

    public override BaseFormat FormatOf(IReadOnlyDictionary<string, Tensor> tensors, string weightName) =>
        Format(FourBitCheckpoint.FromTensors(tensors, Prefix(weightName)));

    public override FrozenLinear Read(IReadOnlyDictionary<string, Tensor> tensors, string weightName, long[] shape,
        Device device, ScalarType computeDType, KernelSelection kernels)
    {
        using var scope = NewDisposeScope();
        var stored = FourBitCheckpoint.FromTensors(tensors, Prefix(weightName));
        if (!stored.Shape.SequenceEqual(shape))
            throw new InvalidDataException($"'{weightName}{QuantStateInfix}{FourBitCodebook.Name(stored.Type)}' says shape [{string.Join(", ", stored.Shape)}], config.json implies [{string.Join(", ", shape)}]");
        return new FourBitLinear(stored.To(device), computeDType, kernels); // the module detaches its buffers from this scope
    }

    public override Dictionary<string, Tensor> Write(Tensor dense, BaseFormat format, string weightName)
    {
        var f = format as FourBitFormat ?? throw new ArgumentException($"{Name} stores nf4/fp4 weights, not {format}");
        var weight = f.Quantize(dense, weightName);
        var tensors = FourBitCheckpoint.ToTensors(weight, Prefix(weightName));
        weight.Packed.Dispose(); // the "weight" key holds its own view of the codes; the scales are the keys themselves
        return tensors;
    }

    /// <summary>
    /// transformers' BitsAndBytesConfig(load_in_4bit=True, ...).to_dict(), keys sorted as it serialises them. The
    /// dense modules (the output head) go into llm_int8_skip_modules, as transformers' own integration leaves them.
    /// </summary>
    public override JsonObject QuantizationConfig(BaseFormat format, string computeDType, IReadOnlyList<string> denseModules)
    {
        var f = format as FourBitFormat ?? throw new ArgumentException($"{Name} stores nf4/fp4 weights, not {format}");
        return new JsonObject
        {
            ["_load_in_4bit"] = true,
            ["_load_in_8bit"] = false,
            ["bnb_4bit_compute_dtype"] = computeDType,
            ["bnb_4bit_quant_storage"] = "uint8",
            ["bnb_4bit_quant_type"] = FourBitCodebook.Name(f.Type),
            ["bnb_4bit_use_double_quant"] = f.DoubleQuant,
            ["llm_int8_enable_fp32_cpu_offload"] = false,
            ["llm_int8_has_fp16_weight"] = false,
            ["llm_int8_skip_modules"] = new JsonArray(denseModules.Select(m => (JsonNode?)m).ToArray()),
            ["llm_int8_threshold"] = 6.0,
            ["load_in_4bit"] = true,
            ["load_in_8bit"] = false,
            ["quant_method"] = "bitsandbytes",
        };
    }

    /// <summary>The format a stored weight is in, as its quant_state describes it.</summary>
    static FourBitFormat Format(FourBitWeight w) =>
        new(w.Type, w.BlockSize, w.IsDoubleQuantized,
            (w.Scales as DoubleQuantizedScales)?.NestedBlockSize ?? DoubleQuantizedScales.DefaultNestedBlockSize);

    static string Prefix(string weightName) => weightName[..^"weight".Length];
}
