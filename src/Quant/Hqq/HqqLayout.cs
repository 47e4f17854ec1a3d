using System.Text;
using System.Text.Json.Nodes;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// An HQQ linear in a checkpoint as hqq's HQQLinear.state_dict writes it (hqq/core/quantize.py, encoded for
/// safetensors by hqq/core/utils.encode_safetensor_type: bool -> uint8 scalar, int -> int32 scalar, str and dtype ->
/// uint8 character codes, torch.Size -> int64), and transformers' HQQ integration reads: under the module's prefix,
/// <code>
///   W_q                 packed codes (HqqBitPack)          scale, zero   fp16 [groups, 1]
///   shape               int64 [2]                          nbits, group_size, axis   int32 scalars
///   packing             "4bit_u8" | ...                    unpack_view_dtype   "torch.uint8" | "torch.int32"
///   compute_dtype       "torch.float16"                    view_as_float, quant_scale, quant_zero, offload_meta   0
///   channel_wise, optimize, encoded_state_dict, stores_quant_config   1          round_zero   1 for 4 bits
/// </code>
/// There is no "{module}.weight" tensor. Only what <see cref="HqqFormat"/> makes is read back: axis 1, packed
/// (no view_as_float), scale and zero not themselves quantized. The layout of <see cref="HqqFormat"/>.
/// </summary>
public sealed class HqqLayout : CheckpointLayout
{
    public static readonly HqqLayout Instance = new();

    /// <summary>Every key hqq writes for a linear (after "{module}.").</summary>
    protected override StateKeys StateKeys { get; } = StateKeys.Beside(withWeight: false,
        "W_q", "nbits", "group_size", "shape", "scale", "zero", "axis", "packing", "unpack_view_dtype", "view_as_float",
        "quant_scale", "quant_zero", "compute_dtype", "offload_meta", "encoded_state_dict", "stores_quant_config",
        "channel_wise", "optimize", "round_zero");

    HqqLayout() { }

    public override string Name => "hqq";

    static string Prefix(string weightName) => weightName[..^"weight".Length];

    /// <summary>hqq's quant_method (or none).</summary>
    public override bool Claims(JsonObject? quantizationConfig) => QuantMethod(quantizationConfig) is null or "hqq";

    public override bool IsStored(string weightName, Func<string, bool> contains) => contains(Prefix(weightName) + "W_q");


    public override void CheckHeader(string weightName, long[] shape, Func<string, (ScalarType DType, long[] Shape)?> header)
    {
        string p = Prefix(weightName);
        foreach (var key in new[] { "scale", "zero", "shape", "nbits", "group_size" })
            if (header(p + key) is null)
                throw new InvalidDataException($"'{p}W_q' is there but '{p}{key}' is missing; the hqq checkpoint is incomplete");
        var (dtype, packed) = header(p + "W_q")!.Value;
        var (_, scaleShape) = header(p + "scale")!.Value;
        long numel = QuantInputChecks.Numel(shape);
        if (packed.Length != 2 || packed[1] <= 0 || numel % packed[1] != 0)
            throw new InvalidDataException($"hqq tensor '{p}W_q' is [{string.Join(", ", packed)}], which cannot hold config.json's [{string.Join(", ", shape)}] in groups of its last dimension");
        long rows = numel / packed[1];
        bool fits = dtype == ScalarType.Int32 ? packed[0] == HqqBitPack.PackedRows(3, rows)
            : dtype == ScalarType.Byte && new[] { 8, 4, 2 }.Any(b => packed[0] == HqqBitPack.PackedRows(b, rows) && HqqBitPack.RowsProblem(b, rows) is null);
        if (!fits || QuantInputChecks.Numel(scaleShape) != rows)
            throw new InvalidDataException($"hqq tensors '{p}W_q' {dtype} [{string.Join(", ", packed)}] and '{p}scale' [{string.Join(", ", scaleShape)}] do not fit config.json's [{string.Join(", ", shape)}] ({rows} groups of {packed[1]})");
    }

    public override BaseFormat FormatOf(IReadOnlyDictionary<string, Tensor> tensors, string weightName)
    {
        string p = Prefix(weightName);
        int bits = Scalar(tensors, p + "nbits"), group = Scalar(tensors, p + "group_size");
        try { return new HqqFormat(bits, group); }
        catch (ArgumentException e) { throw new InvalidDataException($"'{p}nbits' = {bits}, '{p}group_size' = {group}: {e.Message}"); }
    }

    public override FrozenLinear Read(IReadOnlyDictionary<string, Tensor> tensors, string weightName, long[] shape,
        Device device, ScalarType computeDType, KernelSelection kernels)
    {
        using var scope = NewDisposeScope();
        string p = Prefix(weightName);
        var spec = (HqqFormat)FormatOf(tensors, weightName);
        var stored = tensors[p + "shape"].to(ScalarType.Int64).data<long>().ToArray();
        if (!stored.SequenceEqual(shape))
            throw new InvalidDataException($"'{p}shape' says [{string.Join(", ", stored)}], config.json implies [{string.Join(", ", shape)}]");
        if (tensors.TryGetValue(p + "axis", out var axis) && axis.to(ScalarType.Int32).item<int>() != 1)
            throw new InvalidDataException($"'{p}axis' is {axis.to(ScalarType.Int32).item<int>()}; only hqq's axis=1 (groups along the input) is read here");
        foreach (var flag in new[] { "view_as_float", "quant_scale", "quant_zero" })
            if (tensors.TryGetValue(p + flag, out var f) && f.to(ScalarType.Int32).item<int>() != 0)
                throw new InvalidDataException($"'{p}{flag}' is set; hqq checkpoints with {flag} are not read here (re-quantize with plain settings)");
        if (tensors.TryGetValue(p + "packing", out var packing) && Text(packing) != HqqBitPack.Packing(spec.Bits))
            throw new InvalidDataException($"'{p}packing' is '{Text(packing)}', but nbits {spec.Bits} is packed as '{HqqBitPack.Packing(spec.Bits)}'");
        long rows = HqqWeight.RequireShape(shape, spec, weightName);
        var packed = tensors[p + "W_q"];
        long[] want = [HqqBitPack.PackedRows(spec.Bits, rows), spec.GroupSize];
        if (packed.dtype != HqqBitPack.StorageDType(spec.Bits) || !packed.shape.SequenceEqual(want))
            throw new InvalidDataException($"hqq tensor '{p}W_q' is {packed.dtype} [{string.Join(", ", packed.shape)}]; {spec} of [{string.Join(", ", shape)}] is {HqqBitPack.StorageDType(spec.Bits)} [{string.Join(", ", want)}]");
        var scale = tensors[p + "scale"].reshape(rows, 1);
        var zero = tensors[p + "zero"].reshape(rows, 1);
        var weight = new HqqWeight(spec, packed, scale, zero, shape, scale.dtype);
        return new HqqLinear(weight.To(device), computeDType); // the module detaches its buffers from this scope
    }

    public override Dictionary<string, Tensor> Write(Tensor dense, BaseFormat format, string weightName)
    {
        var spec = format as HqqFormat ?? throw new ArgumentException($"{Name} stores hqq weights, not {format}");
        var w = HqqWeight.Quantize(dense, spec, weightName);
        string p = Prefix(weightName);
        return new Dictionary<string, Tensor>
        {
            [p + "W_q"] = w.Packed,
            [p + "nbits"] = Int32(spec.Bits),
            [p + "group_size"] = Int32(spec.GroupSize),
            [p + "shape"] = tensor(w.Shape, ScalarType.Int64),
            [p + "scale"] = w.Scale,
            [p + "zero"] = w.Zero,
            [p + "axis"] = Int32(1),
            [p + "packing"] = Chars(HqqBitPack.Packing(spec.Bits)),
            [p + "unpack_view_dtype"] = Chars(spec.Bits == 3 ? "torch.int32" : "torch.uint8"),
            [p + "view_as_float"] = Bool(false),
            [p + "quant_scale"] = Bool(false),
            [p + "quant_zero"] = Bool(false),
            [p + "compute_dtype"] = Chars("torch.float16"),
            [p + "offload_meta"] = Bool(false),
            [p + "encoded_state_dict"] = Bool(true),
            [p + "stores_quant_config"] = Bool(true),
            [p + "channel_wise"] = Bool(true),
            [p + "optimize"] = Bool(true),
            [p + "round_zero"] = Bool(spec.Bits == 4),
        };
    }

    /// <summary>transformers' HqqConfig(nbits, group_size).to_dict(): hqq's BaseQuantizeConfig under quant_config.</summary>
    public override JsonObject QuantizationConfig(BaseFormat format, string computeDType, IReadOnlyList<string> denseModules)
    {
        var spec = format as HqqFormat ?? throw new ArgumentException($"{Name} stores hqq weights, not {format}");
        return new JsonObject
        {
            ["quant_config"] = new JsonObject
            {
                ["offload_meta"] = false,
                ["scale_quant_params"] = null,
                ["weight_quant_params"] = new JsonObject
                {
                    ["axis"] = 1,
                    ["channel_wise"] = true,
                    ["group_size"] = spec.GroupSize,
                    ["nbits"] = spec.Bits,
                    ["optimize"] = true,
                    ["round_zero"] = spec.Bits == 4,
                    ["view_as_float"] = false,
                },
                ["zero_quant_params"] = null,
            },
            ["quant_method"] = "hqq",
            ["skip_modules"] = new JsonArray(denseModules.Select(m => (JsonNode?)m).ToArray()),
        };
    }

    static int Scalar(IReadOnlyDictionary<string, Tensor> tensors, string key)
    {
        if (!tensors.TryGetValue(key, out var t)) throw new InvalidDataException($"'{key}' is missing; the hqq checkpoint is incomplete");
        if (t.numel() != 1) throw new InvalidDataException($"'{key}' has {t.numel()} values; hqq stores it as one integer");
        return t.to(ScalarType.Int64).item<long>() is var v && v is >= int.MinValue and <= int.MaxValue ? (int)v
            : throw new InvalidDataException($"'{key}' = {t.to(ScalarType.Int64).item<long>()} is out of range");
    }

    static Tensor Int32(int v) => tensor(v, ScalarType.Int32);

    static Tensor Bool(bool v) => tensor((byte)(v ? 1 : 0), ScalarType.Byte);

    static Tensor Chars(string s) => tensor(Encoding.ASCII.GetBytes(s), ScalarType.Byte);

    static string Text(Tensor chars) => Encoding.ASCII.GetString(chars.to(ScalarType.Byte).data<byte>().ToArray());
}
