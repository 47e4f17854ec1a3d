using System.Text.Json.Nodes;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// How a checkpoint holds a linear's weight in a base format: which tensor keys stand for the logical weight
/// "<c>{module}.weight</c>" (bitsandbytes 4-bit: the packed "weight" plus "weight.absmax", "weight.quant_map", ...),
/// how to read them back into a frozen linear without re-quantizing, how to write them, and the
/// <c>quantization_config</c> block config.json carries so that the library that defined the layout loads the
/// directory too. Pure: tensors and names in, tensors and JSON out; file IO stays in the loader
/// (QLoraNet.Models.QuantizedCheckpoint).
/// </summary>
public abstract class CheckpointLayout
{
    /// <summary>For messages: "bitsandbytes 4-bit".</summary>
    public abstract string Name { get; }

    /// <summary>True when <paramref name="weightName"/> ("...q_proj.weight") is stored in this layout (any of its keys exists).</summary>
    public abstract bool IsStored(string weightName, Func<string, bool> contains);

    /// <summary>The keys this layout stores for a linear, named from its weight key.</summary>
    protected abstract StateKeys StateKeys { get; }

    /// <summary>True when <paramref name="tensorName"/> is one of this layout's keys other than the weight's own; gives that weight.</summary>
    public bool IsStateKey(string tensorName, out string weightName) => StateKeys.IsStateKey(tensorName, out weightName);

    /// <summary>The keys to read for <paramref name="weightName"/>, of those present.</summary>
    public IEnumerable<string> Keys(string weightName, Func<string, bool> contains) => StateKeys.Of(weightName, contains);

    /// <summary>
    /// A header-only check before any tensor is read: the layout is complete and its sizes fit the dense
    /// <paramref name="shape"/> config.json implies. <paramref name="header"/> gives a key's dtype and shape (null when absent).
    /// Throws <see cref="InvalidDataException"/> naming the key.
    /// </summary>
    public abstract void CheckHeader(string weightName, long[] shape, Func<string, (ScalarType DType, long[] Shape)?> header);

    /// <summary>The base format the tensors of <paramref name="weightName"/> are stored in.</summary>
    public abstract BaseFormat FormatOf(IReadOnlyDictionary<string, Tensor> tensors, string weightName);

    /// <summary>
    /// The frozen linear stored under <paramref name="weightName"/> (no re-quantization), checked against the dense
    /// <paramref name="shape"/>, on <paramref name="device"/>.
    /// </summary>
    public abstract FrozenLinear Read(IReadOnlyDictionary<string, Tensor> tensors, string weightName, long[] shape,
        Device device, ScalarType computeDType, KernelSelection kernels);

    /// <summary>
    /// <see cref="FormatOf(IReadOnlyDictionary{string, Tensor}, string)"/> given config.json's quantization_config
    /// (null when there is none), for what the tensors do not hold: LLM.int8()'s outlier threshold.
    /// </summary>
    public virtual BaseFormat FormatOf(IReadOnlyDictionary<string, Tensor> tensors, string weightName, JsonObject? quantizationConfig) =>
        FormatOf(tensors, weightName);

    /// <summary>
    /// <see cref="Read(IReadOnlyDictionary{string, Tensor}, string, long[], Device, ScalarType, KernelSelection)"/> given
    /// config.json's quantization_config (null when there is none).
    /// </summary>
    public virtual FrozenLinear Read(IReadOnlyDictionary<string, Tensor> tensors, string weightName, long[] shape,
        Device device, ScalarType computeDType, KernelSelection kernels, JsonObject? quantizationConfig) =>
        Read(tensors, weightName, shape, device, computeDType, kernels);

    /// <summary>
    /// <paramref name="dense"/> quantized in <paramref name="format"/> as the tensors this layout stores under
    /// <paramref name="weightName"/>; each is the caller's to dispose.
    /// </summary>
    public abstract Dictionary<string, Tensor> Write(Tensor dense, BaseFormat format, string weightName);

    /// <summary>config.json's quantization_config for a checkpoint whose linears are in <paramref name="format"/>,
    /// with <paramref name="denseModules"/> (the output head) left unquantized.</summary>
    public abstract JsonObject QuantizationConfig(BaseFormat format, string computeDType, IReadOnlyList<string> denseModules);

    /// <summary>
    /// True when a checkpoint whose config.json carries <paramref name="quantizationConfig"/> (null: none) may hold
    /// this layout. Layouts that share key names (GPTQ's and AWQ's qweight/qzeros/scales) are told apart by the
    /// config's quant_method, as transformers tells them apart.
    /// </summary>
    public virtual bool Claims(JsonObject? quantizationConfig) => true;

    /// <summary>This layout as the checkpoint's quantization_config describes it (e.g. GPTQ's bits, group size,
    /// desc_act, checkpoint format); layouts that need nothing from it return themselves.</summary>
    public virtual CheckpointLayout Configured(JsonObject? quantizationConfig) => this;

    /// <summary>
    /// The tensors of a frozen linear already in this layout's format, under <paramref name="weightName"/>'s keys:
    /// how calibrated formats (GPTQ, AWQ, SmoothQuant), which are made from activations rather than from a weight
    /// alone, are written. Each tensor is the caller's to dispose.
    /// </summary>
    public virtual Dictionary<string, Tensor> WriteLinear(FrozenLinear linear, string weightName) =>
        throw new NotSupportedException($"{Name} writes dense weights through Write, not modules");

    /// <summary>A JSON file written beside config.json (AutoGPTQ's quantize_config.json), or null.</summary>
    public virtual (string FileName, JsonObject Content)? SidecarFile(BaseFormat format) => null;

    /// <summary>The quant_method of a quantization_config, lower case, or null.</summary>
    protected static string? QuantMethod(JsonObject? quantizationConfig) =>
        quantizationConfig?["quant_method"] is JsonValue v && v.TryGetValue(out string? s) ? s.ToLowerInvariant() : null;
}
