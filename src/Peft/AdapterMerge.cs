using QLoraNet.Formats;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// Folds a peft LoRA adapter into base weights as they stream past, one tensor at a time:
///
///     W' = dequant(quant(W)) + scaling · B @ A          computed in fp32; W [out, in], A [r, in], B [out, r]
///
/// where quant is the frozen base format the adapter was trained on. QLoRA (Dettmers et al. 2023, eq. 5) trains
/// B·A against the NF4 weight, not the original one, so merging into the dense W would add the quantization error
/// back as a shift the adapter never saw; with <c>baseFormat</c> nf4-dq the merged weight is exactly the weight the
/// trained model computed with. Every decoder-layer linear goes through the base format (adapted or not, as at
/// training time: the family record's <see cref="ModelArchitecture.IsBaseLinearWeight"/>, the same rule
/// quantize-on-load uses); other tensors pass through untouched.
/// Everything that can be checked from headers is checked in <see cref="Open"/>, before a single byte is written.
/// </summary>
public sealed class AdapterMerge : IDisposable
{
    readonly SafeTensorsFile _factors;
    readonly HashSet<string> _modules;

    public AdapterConfig Config { get; }
    public double Scaling { get; }
    public BaseFormat BaseFormat { get; }
    public ModelArchitecture Architecture { get; }

    /// <summary>Module paths the adapter holds factors for, e.g. "model.layers.0.self_attn.q_proj".</summary>
    public IReadOnlyCollection<string> Modules => _modules;

    /// <summary>How many adapted weights <see cref="Apply"/> has merged so far.</summary>
    public int MergedCount { get; private set; }

    AdapterMerge(SafeTensorsFile factors, HashSet<string> modules, AdapterConfig config, ModelArchitecture architecture, BaseFormat baseFormat)
    {
        _factors = factors;
        _modules = modules;
        Config = config;
        Scaling = config.Lora.Scaling;
        Architecture = architecture;
        BaseFormat = baseFormat;
    }

    /// <summary>
    /// Reads <paramref name="adapterDir"/> and checks it against <paramref name="model"/>'s headers: every tensor is
    /// a LoRA factor of a module whose weight exists, each module has both factors, A is [r, in] and B is [out, r]
    /// with r from adapter_config.json and in/out from the model's weight. Errors name the key and both shapes.
    /// <paramref name="architecture"/> is the model's family record (which tensors are base linears).
    /// </summary>
    public static AdapterMerge Open(string adapterDir, CheckpointReader model, ModelArchitecture architecture, BaseFormat? baseFormat = null)
    {
        if (!Directory.Exists(adapterDir)) throw new DirectoryNotFoundException($"adapter directory '{adapterDir}' does not exist");
        var config = AdapterConfig.Load(adapterDir);
        string file = Path.Combine(adapterDir, AdapterFiles.WeightsFileName);
        if (!File.Exists(file)) throw new FileNotFoundException($"{file}: not found (a peft adapter directory needs an {AdapterFiles.WeightsFileName})", file);
        var factors = SafeTensorsFile.Open(file);
        try
        {
            var modules = Validate(factors, file, config, model);
            return new AdapterMerge(factors, modules, config, architecture, baseFormat ?? new DenseFormat(null));
        }
        catch
        {
            factors.Dispose();
            throw;
        }
    }

    static HashSet<string> Validate(SafeTensorsFile factors, string file, AdapterConfig config, CheckpointReader model)
    {
        var modules = new HashSet<string>(StringComparer.Ordinal);
        foreach (var key in factors.Names)
        {
            if (!AdapterKeys.TryParse(key, out var module, out var factor))
                throw new InvalidDataException($"{file}: tensor '{key}' is not a LoRA factor (expected {AdapterKeys.Prefix}<module>.lora_A.weight or .lora_B.weight)");
            string weightName = module + ".weight";
            if (!model.Contains(weightName))
                throw new InvalidDataException($"{file}: LoRA module '{module}' has no weight '{weightName}' in {model.Directory} (tensor '{key}'); is the adapter for another model?");
            var w = model.Info(weightName);
            var shape = factors.Info(key).Shape;
            if (w.Shape.Length != 2)
                throw new InvalidDataException($"{file}: tensor '{key}' adapts '{weightName}', which is {w.ShapeText}, not a linear weight [out, in]");
            if (shape.Length != 2)
                throw new InvalidDataException($"{file}: tensor '{key}' is {Text(shape)}; a LoRA factor is a matrix");
            // A is [r, in] and B is [out, r]: the rank is A's rows and B's columns.
            bool isA = factor == AdapterKeys.A;
            long rank = isA ? shape[0] : shape[1];
            if (rank != config.Lora.R)
                throw new InvalidDataException($"{file}: tensor '{key}' {Text(shape)} has rank {rank} but {AdapterConfig.FileName} says r={config.Lora.R}");
            long features = isA ? shape[1] : shape[0];
            long expected = isA ? w.Shape[1] : w.Shape[0];
            if (features != expected)
                throw new InvalidDataException(
                    $"{file}: tensor '{key}' is {Text(shape)} but the model's '{weightName}' is {w.ShapeText} ({(isA ? "in" : "out")} features {expected}); the adapter was trained on another architecture");
            modules.Add(module);
        }
        if (modules.Count == 0) throw new InvalidDataException($"{file}: holds no LoRA factors");
        foreach (var module in modules)
            foreach (var factor in new[] { AdapterKeys.A, AdapterKeys.B })
                if (!factors.Contains(AdapterKeys.ToPeft(module, factor)))
                    throw new InvalidDataException($"{file}: LoRA module '{module}' has no tensor '{AdapterKeys.ToPeft(module, factor)}'");
        return modules;
    }

    /// <summary>
    /// The weight to write for <paramref name="hfName"/>: fp32 dequant(quant(W)) + scaling·B·A for an adapted module,
    /// fp32 dequant(quant(W)) for any other decoder-layer linear when the base format is not dense-as-stored, and
    /// <paramref name="weight"/> itself otherwise. A new tensor is the caller's; the argument stays the caller's too.
    /// </summary>
    public Tensor Apply(string hfName, Tensor weight)
    {
        bool isProjection = Architecture.IsBaseLinearWeight(hfName);
        string module = hfName.EndsWith(".weight", StringComparison.Ordinal) ? hfName[..^".weight".Length] : hfName;
        bool adapted = _modules.Contains(module) && hfName.EndsWith(".weight", StringComparison.Ordinal);
        bool requantize = isProjection && !BaseFormat.KeepsCheckpointDType;
        if (!adapted && !requantize) return weight;

        using var scope = NewDisposeScope();
        var dense = requantize ? AsTrained(weight, hfName) : weight.to(ScalarType.Float32);   // (out, in) fp32
        if (!adapted) return dense.MoveToOuterDisposeScope();
        var a = _factors.Read(AdapterKeys.ToPeft(module, AdapterKeys.A));                      // (r, in)
        var b = _factors.Read(AdapterKeys.ToPeft(module, AdapterKeys.B));                      // (out, r)
        MergedCount++;
        return LoraMath.MergedWeight(dense, a, b, Scaling).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// W as the frozen base held it during training: stored in <see cref="BaseFormat"/> by the same factory the
    /// loader uses (so from the same stored dtype, bit for bit), then dequantized to fp32.
    /// </summary>
    Tensor AsTrained(Tensor weight, string hfName)
    {
        using var frozen = FrozenLinearFactory.Create(weight, BaseFormat, ScalarType.Float32, weight.device, hfName);
        return frozen.DequantizeWeight(ScalarType.Float32);
    }

    static string Text(long[] shape) => "[" + string.Join(", ", shape) + "]";

    public void Dispose() => _factors.Dispose();
}
