using System.Text.Json.Nodes;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Awq;

/// <summary>
/// AutoAWQ's GEMM checkpoint layout for a linear "{module}" (what transformers' AwqConfig and peft's AWQ path load):
/// <c>{module}.qweight</c> int32 (in, out/8), <c>{module}.qzeros</c> int32 (in/group, out/8), <c>{module}.scales</c>
/// fp16 (in/group, out) (<see cref="AwqWeight"/> for the interleaved packing), no <c>{module}.weight</c>; config.json's
/// <c>quantization_config</c> with <c>quant_method: "awq"</c>, <c>bits</c> (or <c>w_bit</c>) 4, <c>group_size</c>
/// (or <c>q_group_size</c>), <c>zero_point: true</c>, <c>version: "gemm"</c>. GEMV, Marlin and other versions pack
/// differently and are refused by name.
/// </summary>
public sealed class AwqLayout : CheckpointLayout
{
    public static readonly AwqLayout Instance = new(null);

    protected override StateKeys StateKeys { get; } = StateKeys.Beside(withWeight: false, "qweight", "qzeros", "scales");

    /// <summary>Group size from the config; 0 = one group per row.</summary>
    readonly int? _groupSize;

    AwqLayout(int? groupSize) => _groupSize = groupSize;

    public override string Name => "AWQ (AutoAWQ GEMM)";

    public override bool Claims(JsonObject? quantizationConfig) => QuantMethod(quantizationConfig) == "awq";

    public override CheckpointLayout Configured(JsonObject? c)
    {
        if (c is null) return this;
        int bits = Int(c, "bits") ?? Int(c, "w_bit") ?? 4;
        if (bits != 4) throw new InvalidDataException($"quantization_config (awq) says {bits} bits; the GEMM layout holds 4-bit weights only");
        string version = c["version"] is JsonValue v && v.TryGetValue(out string? s) ? s.ToLowerInvariant() : "gemm";
        if (version != "gemm") throw new InvalidDataException($"quantization_config (awq) has version '{version}'; QLoraNet reads AutoAWQ's GEMM layout only");
        if (c["zero_point"] is JsonValue z && z.TryGetValue(out bool zp) && !zp)
            throw new InvalidDataException("quantization_config (awq) has zero_point: false; the GEMM layout QLoraNet reads stores zero points");
        int group = Int(c, "group_size") ?? Int(c, "q_group_size") ?? 128;
        if (group == 0 || group < -1) throw new InvalidDataException($"quantization_config (awq) 'group_size' is {group}; it must be positive or -1");
        return new AwqLayout(group == -1 ? 0 : group);
    }

    public override bool IsStored(string weightName, Func<string, bool> contains) => contains(Prefix(weightName) + "qweight");


    public override void CheckHeader(string weightName, long[] shape, Func<string, (ScalarType DType, long[] Shape)?> header)
    {
        string p = Prefix(weightName);
        long outFeatures = shape[0], inFeatures = shape[1];
        int group = _groupSize ?? throw NoConfig(weightName);
        if (group > 0 && inFeatures % group != 0)
            throw new InvalidDataException($"'{p}qweight': group_size {group} does not divide in_features {inFeatures}");
        if (outFeatures % 8 != 0)
            throw new InvalidDataException($"'{p}qweight': out_features {outFeatures} is not a multiple of 8, which the GEMM layout packs");
        long groups = group == 0 ? 1 : inFeatures / group;
        Expect(p + "qweight", header, [ScalarType.Int32], [inFeatures, outFeatures / 8], shape);
        Expect(p + "qzeros", header, [ScalarType.Int32], [groups, outFeatures / 8], shape);
        Expect(p + "scales", header, [ScalarType.Float16, ScalarType.BFloat16, ScalarType.Float32], [groups, outFeatures], shape);
    }

    public override BaseFormat FormatOf(IReadOnlyDictionary<string, Tensor> tensors, string weightName) =>
        new AwqFormat(_groupSize ?? throw NoConfig(weightName));

    public override FrozenLinear Read(IReadOnlyDictionary<string, Tensor> tensors, string weightName, long[] shape,
        Device device, ScalarType computeDType, KernelSelection kernels)
    {
        using var scope = NewDisposeScope();
        return new AwqLinear(FromTensors(tensors, weightName, shape).To(device), computeDType);
    }

    /// <summary>The stored weight of <paramref name="weightName"/>, checked against the dense <paramref name="shape"/> [out, in].</summary>
    public AwqWeight FromTensors(IReadOnlyDictionary<string, Tensor> tensors, string weightName, long[] shape)
    {
        CheckHeader(weightName, shape, key => tensors.TryGetValue(key, out var t) ? (t.dtype, t.shape) : null);
        string p = Prefix(weightName);
        return new AwqWeight((AwqFormat)FormatOf(tensors, weightName), tensors[p + "qweight"], tensors[p + "qzeros"],
            tensors[p + "scales"].to(ScalarType.Float16), shape, ScalarType.Float16);
    }

    public override Dictionary<string, Tensor> Write(Tensor dense, BaseFormat format, string weightName) =>
        throw new InvalidOperationException($"{format} is made from calibration activations, not from '{weightName}' alone; `quantize --calibration` writes it");

    public override Dictionary<string, Tensor> WriteLinear(FrozenLinear linear, string weightName)
    {
        var w = (linear as AwqLinear ?? throw new ArgumentException($"'{weightName}' is a {linear.FormatName} linear, not AWQ")).Stored;
        string p = Prefix(weightName);
        return new Dictionary<string, Tensor> { [p + "qweight"] = w.QWeight.alias(), [p + "qzeros"] = w.QZeros.alias(), [p + "scales"] = w.Scales.alias() };
    }

    /// <summary>AutoAWQ's AwqConfig.to_transformers_dict().</summary>
    public override JsonObject QuantizationConfig(BaseFormat format, string computeDType, IReadOnlyList<string> denseModules)
    {
        var f = format as AwqFormat ?? throw new ArgumentException($"{Name} stores AWQ weights, not {format}");
        return new JsonObject
        {
            ["quant_method"] = "awq",
            ["zero_point"] = true,
            ["group_size"] = f.GroupSize == 0 ? -1 : f.GroupSize,
            ["bits"] = AwqFormat.Bits,
            ["version"] = "gemm",
            ["modules_to_not_convert"] = null,
        };
    }

    static InvalidDataException NoConfig(string weightName) =>
        new($"'{Prefix(weightName)}qweight' is an AWQ tensor but config.json has no quantization_config saying its group size");

    static void Expect(string key, Func<string, (ScalarType DType, long[] Shape)?> header, ScalarType[] dtypes, long[] expected, long[] dense)
    {
        var (dtype, shape) = header(key) ?? throw new InvalidDataException($"'{key}' is missing; an AWQ linear needs qweight, qzeros and scales");
        if (!dtypes.Contains(dtype) || !shape.SequenceEqual(expected))
            throw new InvalidDataException($"AWQ tensor '{key}' is {dtype} [{string.Join(", ", shape)}], but a 4-bit [{string.Join(", ", dense)}] weight needs {dtypes[0]} [{string.Join(", ", expected)}]");
    }

    static int? Int(JsonObject o, string key) => o[key] is JsonValue v && v.TryGetValue(out int i) ? i : null;

    static string Prefix(string weightName) => weightName.EndsWith("weight", StringComparison.Ordinal) ? weightName[..^"weight".Length] : weightName + ".";
}
