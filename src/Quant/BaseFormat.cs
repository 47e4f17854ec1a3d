using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// How the frozen base linears are stored: one parsed, validated value per format, with one canonical spelling
/// (<see cref="ToString"/>) that the YAML config, the CLI's <c>--quantization</c>, the `quantize` verb, a stored
/// checkpoint and the trainer all use. The value is also the format's implementation: it builds the frozen linear
/// (<see cref="Create"/>), knows the bytes a weight takes (<see cref="StorageBytes"/>) and, for formats a checkpoint
/// can hold, the tensor keys it is stored under (<see cref="Layout"/>).
/// <code>
///   none | bf16 | fp16 | fp32                            dense (none keeps the checkpoint dtype)
///   nf4 | fp4 [-b&lt;N&gt;] [-dq[&lt;M&gt;]]                        4-bit blockwise, blocksize N (64), double-quantized scales (M = 256)
///   int8 | int4 | int3 [-tensor|-channel|-g&lt;N&gt;] [-sym|-asym]     linear quantization (default: per channel, symmetric)
///   llm-int8 [-t&lt;T&gt;] | hqq2|3|4|8 [-g&lt;N&gt;] | ternary              LLM.int8(), HQQ, BitNet b1.58
///   q4_0 | q8_0                                          GGUF's block formats, as `export --type` writes them
///   gptq2|3|4|8 [-g&lt;N&gt;] [-act] | awq4 [-g&lt;N&gt;] [-noclip] | smoothquant [-a&lt;alpha&gt;]   calibrated (need activations)
/// </code>
/// The spellings are parsed by the kinds registered in <see cref="BaseFormats"/>.
/// </summary>
public abstract record BaseFormat
{
    /// <summary>Parses and validates a spelling; a bad one is a <see cref="FormatException"/> naming it and the choices.</summary>
    public static BaseFormat Parse(string text) => BaseFormats.Parse(text);

    /// <summary>The canonical spelling, e.g. "nf4-dq": <c>Parse(f.ToString()) == f</c>.</summary>
    public abstract override string ToString();

    /// <summary>
    /// The frozen linear holding <paramref name="weight"/> [out, in] (already on its device) in this format;
    /// <paramref name="kernels"/> chooses the dequantization path where a format has several.
    /// <paramref name="name"/> labels errors (the checkpoint key).
    /// </summary>
    public abstract FrozenLinear Create(Tensor weight, ScalarType computeDType, KernelSelection kernels, string? name = null);

    /// <summary>Exact bytes a [rows, cols] weight is held in (codes, scales, zero points; shared code tables not
    /// counted); <paramref name="sourceDType"/> is the checkpoint dtype, used by "none".</summary>
    public abstract long StorageBytes(long rows, long cols, ScalarType sourceDType = ScalarType.BFloat16);

    public double BitsPerWeight(long rows, long cols, ScalarType sourceDType = ScalarType.BFloat16) =>
        8.0 * StorageBytes(rows, cols, sourceDType) / (rows * cols);

    /// <summary>How a checkpoint stores weights in this format (bitsandbytes' keys for nf4/fp4); null when no
    /// checkpoint layout exists for it, so it can only be produced on load.</summary>
    public virtual CheckpointLayout? Layout => null;

    /// <summary>
    /// How quantization-aware training fakes this format in the forward pass (straight-through gradients), or null
    /// when it cannot: the YAML key <c>quantization.aware</c> accepts the formats that have one. Every format that
    /// quantizes a weight alone has one, from its <see cref="RoundTrip"/> (<see cref="RoundTripFakeQuantization"/>;
    /// ternary adds its 8-bit activations); calibrated formats (GPTQ, AWQ, SmoothQuant) and "none" have none.
    /// </summary>
    public virtual IFakeQuantization? FakeQuantization =>
        NeedsCalibration || KeepsCheckpointDType ? null : new RoundTripFakeQuantization(this);

    /// <summary>"none": every weight stays dense in the dtype the checkpoint stores it in.</summary>
    public bool KeepsCheckpointDType => this is DenseFormat { DType: null };

    /// <summary>
    /// True for formats whose quantization needs the activations that reach each linear (GPTQ, AWQ, SmoothQuant):
    /// they are made layer by layer from calibration data (QLoraNet.Models.Calibration), never from a weight alone,
    /// so <see cref="Create"/> refuses them.
    /// </summary>
    public virtual bool NeedsCalibration => false;

    /// <summary>
    /// <paramref name="weight"/> [out, in] quantized in this format and dequantized again, in fp32 on its device:
    /// what a model stored in this format computes with. Fake quantization for quantization-aware training uses it
    /// (<see cref="RoundTripFakeQuantization"/>). The default builds the frozen linear and reads its weight back.
    /// </summary>
    public virtual Tensor RoundTrip(Tensor weight, string? name = null)
    {
        using var linear = Create(weight.detach(), ScalarType.Float32, KernelSelection.Portable, name);
        return linear.DequantizeWeight(ScalarType.Float32);
    }
}
