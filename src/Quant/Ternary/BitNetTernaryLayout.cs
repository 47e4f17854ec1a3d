using System.Text.Json.Nodes;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A BitNet b1.58 linear in a Hugging Face checkpoint (what microsoft/bitnet-b1.58-2B-4T ships and transformers'
/// BitNet integration reads with <c>quantization_mode: offline</c>): <c>{module}.weight</c> uint8 [out/4, in] packed
/// as <see cref="TernaryWeight"/> describes, and <c>{module}.weight_scale</c> [1] (bf16), the absmean that
/// multiplies the output (<c>linear_class: autobitlinear</c>). The layout of <see cref="TernaryFormat"/>.
/// </summary>
public sealed class BitNetTernaryLayout : CheckpointLayout
{
    public static readonly BitNetTernaryLayout Instance = new();

    const string ScaleSuffix = "_scale";   // "...q_proj.weight" + "_scale"

    /// <summary>The packed codes under "{module}.weight", the scale under "{module}.weight_scale".</summary>
    protected override StateKeys StateKeys { get; } = StateKeys.After(withWeight: true, ScaleSuffix);

    BitNetTernaryLayout() { }

    public override string Name => "BitNet ternary";

    /// <summary>transformers' "bitnet" quant_method (or none): compressed-tensors' W8A8 also keeps "...weight_scale",
    /// so the config's quant_method tells the two apart, as transformers does.</summary>
    public override bool Claims(JsonObject? quantizationConfig) => QuantMethod(quantizationConfig) is null or "bitnet";

    public override bool IsStored(string weightName, Func<string, bool> contains) => contains(weightName + ScaleSuffix);


    public override void CheckHeader(string weightName, long[] shape, Func<string, (ScalarType DType, long[] Shape)?> header)
    {
        if (shape.Length != 2 || shape[0] % 4 != 0)
            throw new InvalidDataException($"'{weightName}' is stored ternary, but config.json implies [{string.Join(", ", shape)}], whose out_features is not a multiple of 4");
        long[] packed = [shape[0] / 4, shape[1]];
        var (dtype, stored) = header(weightName) ?? throw new InvalidDataException($"'{weightName}' is missing beside '{weightName}{ScaleSuffix}'");
        if (dtype != ScalarType.Byte || !stored.SequenceEqual(packed))
            throw new InvalidDataException($"ternary tensor '{weightName}' is {dtype} [{string.Join(", ", stored)}], but config.json implies [{string.Join(", ", shape)}] = uint8 [{string.Join(", ", packed)}] packed four rows to a byte");
        var (scaleDType, scaleShape) = header(weightName + ScaleSuffix)!.Value;
        if (QuantInputChecks.Numel(scaleShape) != 1 || scaleDType is not (ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float32))
            throw new InvalidDataException($"'{weightName}{ScaleSuffix}' is {scaleDType} [{string.Join(", ", scaleShape)}]; a BitNet weight scale is one float");
    }

    public override BaseFormat FormatOf(IReadOnlyDictionary<string, Tensor> tensors, string weightName) => new TernaryFormat();

    public override FrozenLinear Read(IReadOnlyDictionary<string, Tensor> tensors, string weightName, long[] shape,
        Device device, ScalarType computeDType, KernelSelection kernels)
    {
        using var scope = NewDisposeScope();
        var packed = tensors[weightName];
        var scale = tensors[weightName + ScaleSuffix].reshape(1);
        if (packed.dtype != ScalarType.Byte || packed.dim() != 2 || packed.shape[0] * 4 != shape[0] || packed.shape[1] != shape[1])
            throw new InvalidDataException($"ternary tensor '{weightName}' is {packed.dtype} [{string.Join(", ", packed.shape)}], but config.json implies [{string.Join(", ", shape)}]");
        TernaryWeight.RequireTernaryCodes(packed, weightName);
        var stored = new TernaryWeight(packed, scale, shape, scale.dtype);
        return new TernaryLinear(stored.To(device), computeDType, kernels); // the module detaches its buffers from this scope
    }

    public override Dictionary<string, Tensor> Write(Tensor dense, BaseFormat format, string weightName)
    {
        if (format is not TernaryFormat) throw new ArgumentException($"{Name} stores ternary weights, not {format}");
        var w = TernaryWeight.Quantize(dense, weightName);
        return new Dictionary<string, Tensor> { [weightName] = w.Packed, [weightName + ScaleSuffix] = w.Scale };
    }

    /// <summary>transformers' BitNetQuantConfig as the released BitNet b1.58 checkpoints carry it, with the dense modules (the head) left unconverted.</summary>
    public override JsonObject QuantizationConfig(BaseFormat format, string computeDType, IReadOnlyList<string> denseModules) => new()
    {
        ["linear_class"] = "autobitlinear",
        ["modules_to_not_convert"] = new JsonArray(denseModules.Select(m => (JsonNode?)m).ToArray()),
        ["quant_method"] = "bitnet",
        ["quantization_mode"] = "offline",
    };
}
