using System.Text.Json;
using System.Text.Json.Nodes;
using QLoraNet.Formats;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// A Hugging Face model directory whose decoder-layer linears (the record's <see cref="ModelArchitecture.IsBaseLinearWeight"/>)
/// are stored already quantized, in a base format's <see cref="CheckpointLayout"/> (nf4/fp4: bitsandbytes' Linear4bit
/// tensors), everything else as in the original checkpoint, and a config.json with the layout's
/// <c>quantization_config</c> block. <see cref="Write"/> makes one from an ordinary checkpoint, streaming tensor by
/// tensor; the loader reads the stored codes back without re-quantizing (<see cref="ReadLinear"/>), so a saved model
/// equals a quantized-on-load one bit for bit. The stored format's spelling (<see cref="StoredFormat"/>) is the
/// same one the CLI and the config use.
/// </summary>
public static class QuantizedCheckpoint
{
    /// <summary>AutoGPTQ's own config file, read when config.json has no quantization_config.</summary>
    public const string GptqConfigFile = "quantize_config.json";

    /// <summary>
    /// The checkpoint's quantization_config: config.json's "quantization_config" object, else AutoGPTQ's
    /// quantize_config.json (quant_method gptq unless it says otherwise), else null. It tells layouts that share key
    /// names apart (GPTQ and AWQ both store qweight/qzeros/scales) and carries their settings (bits, group size).
    /// </summary>
    public static JsonObject? QuantizationConfigOf(string modelDir)
    {
        string config = Path.Combine(modelDir, ModelArchitecture.ConfigFileName);
        if (File.Exists(config) && ReadObject(config)?["quantization_config"] is JsonObject q) return q;
        string gptq = Path.Combine(modelDir, GptqConfigFile);
        if (!File.Exists(gptq)) return null;
        var sidecar = ReadObject(gptq) ?? throw new InvalidDataException($"{gptq}: not a JSON object");
        if (sidecar["quant_method"] is null) sidecar["quant_method"] = "gptq";
        return sidecar;
    }

    static JsonObject? ReadObject(string path) => UserFile.ReadJsonNode(path, what: "quantization config") as JsonObject;

    /// <summary>The layout <paramref name="weightName"/> is stored in (configured by the checkpoint's
    /// <paramref name="quantizationConfig"/>), or null for a plain float tensor.</summary>
    public static CheckpointLayout? LayoutOf(CheckpointReader ckpt, string weightName, JsonObject? quantizationConfig)
    {
        try { return BaseFormats.StoredLayout(weightName, ckpt.Contains, quantizationConfig); }
        catch (InvalidDataException e) { throw new InvalidDataException($"{Path.Combine(ckpt.Directory, ModelArchitecture.ConfigFileName)}: {e.Message}"); }
    }

    /// <summary>True when any tensor of the checkpoint belongs to a stored layout.</summary>
    public static bool IsQuantized(CheckpointReader ckpt)
    {
        var layouts = BaseFormats.LayoutsFor(QuantizationConfigOf(ckpt.Directory)).ToList();
        return ckpt.Names.Any(n => layouts.Any(l => l.IsStateKey(n, out _)));
    }

    /// <summary>Header-only check of a stored weight before anything is read (see <see cref="CheckpointLayout.CheckHeader"/>).</summary>
    public static void CheckHeader(CheckpointReader ckpt, CheckpointLayout layout, string weightName, long[] shape)
    {
        try
        {
            layout.CheckHeader(weightName, shape, key => ckpt.Contains(key) ? (ckpt.Info(key).DType, ckpt.Info(key).Shape) : null);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{ShardOf(ckpt, layout, weightName)}: {e.Message}");
        }
    }

    /// <summary>The file holding a stored weight's keys (a layout may have no "...weight" tensor: hqq's W_q).</summary>
    static string ShardOf(CheckpointReader ckpt, CheckpointLayout layout, string weightName) =>
        layout.Keys(weightName, ckpt.Contains).Select(k => ckpt.Info(k).ShardPath).FirstOrDefault() ?? ckpt.Directory;

    /// <summary>
    /// The frozen linear of <paramref name="weightName"/> from its stored tensors (no re-quantization). Stored state
    /// that disagrees with its tensors, or with <paramref name="shape"/>, is a one-line error naming the key.
    /// </summary>
    public static FrozenLinear ReadLinear(CheckpointReader ckpt, CheckpointLayout layout, string weightName, long[] shape,
        Device device, ScalarType computeDType, KernelSelection kernels)
    {
        using var scope = NewDisposeScope();
        var tensors = layout.Keys(weightName, ckpt.Contains).ToDictionary(k => k, ckpt.Read);
        var config = QuantizationConfigOf(ckpt.Directory);
        return WithPath(ckpt, layout, weightName, () => layout.Read(tensors, weightName, shape, device, computeDType, kernels, config));
    }

    /// <summary>The base format the checkpoint in <paramref name="modelDir"/> is stored in ("nf4-dq", ...), or null when it is not pre-quantized.</summary>
    public static BaseFormat? StoredFormat(string modelDir)
    {
        using var ckpt = CheckpointReader.Open(modelDir);
        var config = QuantizationConfigOf(modelDir);
        foreach (var name in ckpt.Names)
            foreach (var detector in BaseFormats.LayoutsFor(config))
                if (detector.IsStateKey(name, out var weight))
                {
                    var layout = LayoutOf(ckpt, weight, config) ?? detector;
                    using var scope = NewDisposeScope();
                    var tensors = layout.Keys(weight, ckpt.Contains).ToDictionary(k => k, ckpt.Read);
                    return WithPath(ckpt, layout, weight, () => layout.FormatOf(tensors, weight, config));
                }
        return null;
    }

    /// <summary>
    /// A stored checkpoint keeps its format: asking to load it as another one (say --quantization int8 on an
    /// nf4-dq directory) would mean dequantizing and quantizing again, which is never what the user meant.
    /// "none" (the default) and the stored format itself are accepted.
    /// </summary>
    public static void RequireCompatible(string modelDir, BaseFormat requested)
    {
        var stored = StoredFormat(modelDir);
        if (stored is null || requested.KeepsCheckpointDType || requested == stored) return;
        throw new ArgumentException($"--quantization {requested}: {modelDir} is already quantized as {stored} ({stored.Layout?.Name}); omit --quantization or pass {stored}, or quantize the original weights");
    }

    /// <summary>config.json's quantization_config for linears in <paramref name="format"/>: the head stays dense.</summary>
    public static JsonObject QuantizationConfig(BaseFormat format, string computeDType, ModelArchitecture arch) =>
        (format.Layout ?? throw NoLayout(format)).QuantizationConfig(format, computeDType, [arch.HeadName]);

    /// <summary>What <see cref="Write"/> produced.</summary>
    public sealed record Summary(int QuantizedTensors, int CopiedTensors, IReadOnlyList<string> Files, long Bytes);

    /// <summary>
    /// Writes <paramref name="modelDir"/> with every decoder-layer linear in <paramref name="format"/> (which must have a
    /// checkpoint layout) into <paramref name="outDir"/>: into a sibling temporary directory first, renamed when
    /// complete, so a crash never leaves a half-written model. An existing non-empty <paramref name="outDir"/> is
    /// refused unless <paramref name="overwrite"/>.
    /// The safetensors header lists every tensor's byte length before any data, and a bitsandbytes quant_state's
    /// JSON length depends on its nested_offset (printed like Python's repr): so each linear is quantized once to
    /// plan the layout and again while writing, instead of keeping the whole quantized model in memory.
    /// </summary>
    public static Summary Write(string modelDir, string outDir, BaseFormat format, bool overwrite = false,
        long maxShardBytes = CheckpointWriter.DefaultMaxShardBytes)
    {
        if (format.NeedsCalibration)
            throw new ArgumentException($"{format} is made from calibration activations; quantize with calibration data (WriteModel with the calibrated model)");
        var layout = format.Layout ?? throw NoLayout(format);
        string target = CheckTarget(modelDir, outDir, overwrite);
        OutputLocation.RequireParent(outDir);
        var arch = ModelFamilies.Load(modelDir); // a readable, supported config before minutes of work

        using var ckpt = CheckpointReader.Open(modelDir);
        if (IsQuantized(ckpt))
            throw new InvalidDataException($"{modelDir}: already a quantized checkpoint; quantize the original weights instead");
        var (plan, sourceOf) = Plan(ckpt, arch, format, layout);

        string? currentSource = null;
        var current = new Dictionary<string, Tensor>();
        Tensor Produce(string key)
        {
            string source = sourceOf[key];
            if (!arch.IsBaseLinearWeight(source)) return ckpt.Read(source);
            if (currentSource != source)
            {
                // All keys of one linear are consecutive in the plan: quantized on the first, handed out after.
                using var dense = ckpt.Read(source);
                (currentSource, current) = (source, layout.Write(dense, format, source));
            }
            return current.Remove(key, out var t) ? t : throw new InvalidOperationException($"{key} was planned but not produced");
        }
        return Publish(modelDir, target, format, arch, ckpt, plan, Produce, maxShardBytes);
    }

    /// <summary>
    /// Writes a model quantized in a calibrated format (<paramref name="model"/>, built by
    /// <see cref="Calibration.CalibratedLoader"/> from <paramref name="modelDir"/>) as a checkpoint directory: each
    /// decoder-layer linear under its layout's keys from the module itself (<see cref="CheckpointLayout.WriteLinear"/>),
    /// the decoder layers' norm weights and biases from the model too (AWQ and SmoothQuant fold their scales into
    /// them), cast to the checkpoint's dtype, everything else (embedding, final norm, head) copied as stored.
    /// Same directory rules as <see cref="Write"/>.
    /// </summary>
    public static Summary WriteModel(string modelDir, string outDir, BaseFormat format, LlamaForCausalLM model, bool overwrite = false,
        long maxShardBytes = CheckpointWriter.DefaultMaxShardBytes)
    {
        var layout = format.Layout ?? throw NoLayout(format);
        string target = CheckTarget(modelDir, outDir, overwrite);
        var arch = model.Architecture;
        using var ckpt = CheckpointReader.Open(modelDir);
        if (IsQuantized(ckpt))
            throw new InvalidDataException($"{modelDir}: already a quantized checkpoint; quantize the original weights instead");

        Dictionary<string, Tensor> LinearTensors(string name) =>
            layout.WriteLinear(model.GetLinear(name[..^".weight".Length]) as FrozenLinear
                ?? throw new InvalidOperationException($"'{name}' is not a frozen linear in the model"), name);
        var plan = new List<SafeTensors.Entry>();
        var sourceOf = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var name in ckpt.Names)
        {
            if (!arch.IsBaseLinearWeight(name))
            {
                var info = ckpt.Info(name);
                plan.Add(new(name, info.DType, info.Shape));
                sourceOf[name] = name;
                continue;
            }
            foreach (var (key, t) in LinearTensors(name))
            {
                plan.Add(new(key, t.dtype, t.shape));
                sourceOf[key] = name;
                t.Dispose();
            }
        }
        Tensor Produce(string key)
        {
            string source = sourceOf[key];
            if (arch.IsBaseLinearWeight(source))
            {
                using var scope = NewDisposeScope();   // the other keys' views go with it
                return LinearTensors(source)[key].cpu().contiguous().MoveToOuterDisposeScope();
            }
            if (LayerTensor(model, source) is { } current)
                return current.to(ckpt.Info(source).DType, CPU, copy: true);
            return ckpt.Read(source);
        }
        return Publish(modelDir, target, format, arch, ckpt, plan, Produce, maxShardBytes);
    }

    /// <summary>A decoder layer's norm weight or bias as the model holds it now, or null for any other tensor.</summary>
    static Tensor? LayerTensor(LlamaForCausalLM model, string name)
    {
        var arch = model.Architecture;
        if (!arch.TryLayerPart(name, out int i, out string part) || i >= model.Model.Layers.Count) return null;
        var layer = model.Model.Layers[i];
        if (arch.LayerNorms.FirstOrDefault(n => n.Path + ".weight" == part) is { } norm) return layer.Norm(norm.Role)?.Weight;
        if (arch.LayerLinears.FirstOrDefault(l => l.HasBias && l.Path + ".bias" == part) is { } linear)
            return (linear.IsAttention ? layer.SelfAttn.Projections : layer.Mlp.Projections).Bias(linear.Name);
        return null;
    }

    /// <summary>The full path of --out after the directory rules (not the model itself, empty or --overwrite, not a file).</summary>
    static string CheckTarget(string modelDir, string outDir, bool overwrite)
    {
        string source = Path.GetFullPath(modelDir), target = Path.GetFullPath(outDir).TrimEnd(Path.DirectorySeparatorChar);
        if (source.TrimEnd(Path.DirectorySeparatorChar) == target)
            throw new IOException($"--out '{outDir}' is the model directory itself; write the quantized model elsewhere");
        if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any() && !overwrite)
            throw new IOException($"--out '{outDir}' exists and is not empty; pass --overwrite to replace it");
        if (File.Exists(target)) throw new IOException($"--out '{outDir}' is a file; give a directory");
        return target;
    }

    /// <summary>Writes the planned tensors, config.json (+ the layout's sidecar) and the tokenizer files into a
    /// temporary sibling, then renames it to <paramref name="target"/>.</summary>
    static Summary Publish(string modelDir, string target, BaseFormat format, ModelArchitecture arch, CheckpointReader ckpt,
        List<SafeTensors.Entry> plan, Func<string, Tensor> produce, long maxShardBytes)
    {
        IReadOnlyList<string> files = [];
        AtomicDirectory.Write(target, staging =>
        {
            files = CheckpointWriter.Write(staging, plan, produce, maxShardBytes);  // the writer disposes each tensor it gets
            WriteConfig(modelDir, staging, format, arch);
            foreach (var file in Directory.EnumerateFiles(modelDir).Where(IsTokenizerFile))
                File.Copy(file, Path.Combine(staging, Path.GetFileName(file)));
        });
        long bytes = Directory.EnumerateFiles(target).Sum(f => new FileInfo(f).Length);
        int quantized = ckpt.Names.Count(arch.IsBaseLinearWeight);
        return new Summary(quantized, ckpt.Names.Count - quantized, files, bytes);
    }

    /// <summary>Every output tensor's name, dtype and shape, in file order (linears become their layout's keys), and
    /// the checkpoint tensor each output key comes from.</summary>
    static (List<SafeTensors.Entry> Plan, Dictionary<string, string> SourceOf) Plan(CheckpointReader ckpt, ModelArchitecture arch,
        BaseFormat format, CheckpointLayout layout)
    {
        var plan = new List<SafeTensors.Entry>();
        var sourceOf = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var name in ckpt.Names)
        {
            var info = ckpt.Info(name);
            if (!arch.IsBaseLinearWeight(name))
            {
                plan.Add(new(name, info.DType, info.Shape));
                sourceOf[name] = name;
                continue;
            }
            using var scope = NewDisposeScope();
            using var dense = ckpt.Read(name);
            foreach (var (key, t) in layout.Write(dense, format, name))
            {
                plan.Add(new(key, t.dtype, t.shape));
                sourceOf[key] = name;
            }
        }
        return (plan, sourceOf);
    }

    /// <summary>
    /// config.json with the layout's quantization_config (for bitsandbytes, the block transformers writes for
    /// load_in_4bit), so `AutoModelForCausalLM.from_pretrained` recognises the directory and reads the state.
    /// </summary>
    static void WriteConfig(string modelDir, string outDir, BaseFormat format, ModelArchitecture arch)
    {
        var config = UserFile.ReadJsonNode(Path.Combine(modelDir, ModelArchitecture.ConfigFileName), what: "model config")!.AsObject();
        config["quantization_config"] = QuantizationConfig(format, "bfloat16", arch);
        var indented = new JsonSerializerOptions { WriteIndented = true };
        File.WriteAllText(Path.Combine(outDir, ModelArchitecture.ConfigFileName), config.ToJsonString(indented) + "\n");
        if (format.Layout?.SidecarFile(format) is { } sidecar)
            File.WriteAllText(Path.Combine(outDir, sidecar.FileName), sidecar.Content.ToJsonString(indented) + "\n");
    }

    static T WithPath<T>(CheckpointReader ckpt, CheckpointLayout layout, string weightName, Func<T> read)
    {
        try { return read(); }
        catch (InvalidDataException e) { throw new InvalidDataException($"{ShardOf(ckpt, layout, weightName)}: {e.Message}"); }
    }

    static ArgumentException NoLayout(BaseFormat format) => new(
        $"base format {format} has no checkpoint layout; a checkpoint can store {string.Join(", ", BaseFormats.Layouts.Select(l => l.Name))} formats (nf4, fp4, gptq, awq4, smoothquant and their options)");

    static bool IsTokenizerFile(string path)
    {
        string name = Path.GetFileName(path);
        return name.StartsWith("tokenizer", StringComparison.Ordinal)
            || name is "special_tokens_map.json" or "added_tokens.json" or "generation_config.json";
    }
}
