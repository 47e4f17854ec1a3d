using System.Globalization;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.SmoothQuant;

/// <summary>
/// SmoothQuant (Xiao et al. 2022, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
/// Models", arXiv:2211.10438): activation outliers are migrated into the weights by a per-input-channel factor
/// s_j = max|X_j|^α / max|W_j|^(1-α) (<see cref="SmoothingScales"/>), divided out of the preceding RMSNorm's weight
/// and multiplied into the linears' columns, which leaves the float model's function unchanged; then W8A8: int8
/// weights per output channel, int8 activations per token computed at run time (dynamic), and an int8 x int8 -> int32
/// matmul (<see cref="W8A8Linear"/>). Spelling <c>smoothquant[-a&lt;alpha&gt;]</c>, α in [0, 1] (default 0.5, the
/// paper's choice for most models; <c>smoothquant-a0.8</c> for models with stronger outliers). Needs calibration data
/// (the activation maxima); stored in compressed-tensors' W8A8 layout (<see cref="W8A8Layout"/>).
/// </summary>
public sealed record SmoothQuantFormat : BaseFormat
{
    public const double DefaultAlpha = 0.5;

    public static readonly BaseFormatKind Kind = new SmoothQuantKind();

    public SmoothQuantFormat(double Alpha = DefaultAlpha)
    {
        if (!(Alpha >= 0 && Alpha <= 1)) throw new ArgumentException($"SmoothQuant's alpha is in [0, 1], not {Alpha}");
        this.Alpha = Alpha;
    }

    /// <summary>The migration strength α.</summary>
    public double Alpha { get; }

    public override string ToString() =>
        "smoothquant" + (Alpha == DefaultAlpha ? "" : "-a" + Alpha.ToString("0.###", CultureInfo.InvariantCulture));

    public override bool NeedsCalibration => true;

    public override FrozenLinear Create(Tensor weight, ScalarType computeDType, KernelSelection kernels, string? name = null) =>
        throw new InvalidOperationException($"{this} needs calibration data: make it with `quantize --quantization {this} --calibration FILE` (or --calibration on the verb that loads it)");

    /// <summary>int8 codes + one fp32 scale per output row.</summary>
    public override long StorageBytes(long rows, long cols, ScalarType sourceDType = ScalarType.BFloat16) => rows * cols + 4 * rows;

    public override CheckpointLayout Layout => W8A8Layout.Instance;

    sealed class SmoothQuantKind : BaseFormatKind
    {
        public override IReadOnlyList<string> Names => ["smoothquant"];
        public override string Syntax => "smoothquant[-a<alpha>] (calibrated W8A8)";

        public override BaseFormat Parse(string name, IReadOnlyList<string> options, string text)
        {
            double alpha = DefaultAlpha;
            foreach (var o in options)
            {
                if (o.StartsWith('a') && double.TryParse(o[1..], NumberStyles.Float, CultureInfo.InvariantCulture, out double a))
                {
                    if (!(a >= 0 && a <= 1)) throw new FormatException($"base format '{text}': alpha must be in [0, 1]; got {o[1..]}");
                    alpha = a;
                }
                else throw new FormatException($"unknown option '{o}' in base format '{text}'; {name} takes -a<alpha>, e.g. smoothquant-a0.8");
            }
            return new SmoothQuantFormat(alpha);
        }
    }
}
