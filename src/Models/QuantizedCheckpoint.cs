using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using QLoraNet.Formats;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// A Hugging Face Llama directory whose decoder projections are stored already quantized, in the tensors
/// bitsandbytes puts in a state dict for a Linear4bit (<see cref="FourBitCheckpoint"/>: packed uint8 `weight`,
/// `weight.absmax`, `weight.quant_map`, [`weight.nested_absmax`, `weight.nested_quant_map`],
/// `weight.quant_state.bitsandbytes__nf4|fp4`), everything else as in the original checkpoint, and a config.json with
/// the `quantization_config` block transformers writes for `BitsAndBytesConfig(load_in_4bit=True)`.
/// <see cref="Write"/> makes one from an ordinary checkpoint, streaming tensor by tensor; the loader reads the stored
/// codes back without re-quantizing (<see cref="ReadLinear"/>), so a saved model equals a quantized-on-load one bit for bit.
/// </summary>
public static class QuantizedCheckpoint
{
    const string QuantStateInfix = ".quant_state.bitsandbytes__";

    /// <summary>Suffixes (after the "...weight" key) of the tensors that hold a 4-bit weight's quantization state.</summary>
    static readonly string[] StateSuffixes =
        [".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", QuantStateInfix + "nf4", QuantStateInfix + "fp4"];

    /// <summary>The projections QLoRA quantizes: every linear of the decoder layers; the output head stays dense
    /// (transformers' bitsandbytes integration skips lm_head too).</summary>
    static readonly Regex DecoderLinear = new(@"^model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)\.weight$", RegexOptions.Compiled);

    /// <summary>True when any tensor of the checkpoint carries a bitsandbytes 4-bit quant_state.</summary>
    public static bool IsQuantized(CheckpointReader ckpt) => ckpt.Names.Any(n => n.Contains(QuantStateInfix, StringComparison.Ordinal));

    /// <summary>True when <paramref name="weightName"/> ("...q_proj.weight") is stored in 4 bits (any of its state tensors exists).</summary>
    public static bool IsStored(CheckpointReader ckpt, string weightName) => StateSuffixes.Any(s => ckpt.Contains(weightName + s));

    /// <summary>True when <paramref name="name"/> is a state tensor of a 4-bit weight; gives that weight's key.</summary>
    public static bool IsStateOf(string name, out string weightName)
    {
        foreach (var s in StateSuffixes)
            if (name.EndsWith(s, StringComparison.Ordinal))
            {
                weightName = name[..^s.Length];
                return true;
            }
        weightName = "";
        return false;
    }

    /// <summary>
    /// Header-only check of a stored 4-bit weight before anything is read: its quant_state exists and the packed
    /// codes have the size config.json implies. The rest (quant_state contents) is checked when the weight is read.
    /// </summary>
    public static void ValidateHeader(CheckpointReader ckpt, string weightName, long[] shape)
    {
        var info = ckpt.Info(weightName);
        if (!ckpt.Contains(weightName + QuantStateInfix + "nf4") && !ckpt.Contains(weightName + QuantStateInfix + "fp4"))
            throw new InvalidDataException($"{info.ShardPath}: '{weightName}' has 4-bit state tensors but no '{weightName}{QuantStateInfix}nf4' (or __fp4); the checkpoint is incomplete, re-run `quantize` from the original weights");
        long packedBytes = (shape.Aggregate(1L, (a, b) => a * b) + 1) / 2;
        long numel = info.Shape.Aggregate(1L, (a, b) => a * b);
        if (info.DType != ScalarType.Byte || numel != packedBytes)
            throw new InvalidDataException($"{info.ShardPath}: 4-bit tensor '{weightName}' is {info.DType} {info.ShapeText}, but config.json implies [{string.Join(", ", shape)}] = {packedBytes} packed uint8 bytes");
    }

    /// <summary>
    /// Builds the frozen 4-bit linear of <paramref name="weightName"/> from its stored tensors (no re-quantization).
    /// A quant_state that disagrees with its tensors, or whose shape is not <paramref name="shape"/>, is a one-line
    /// error naming the key.
    /// </summary>
    public static FrozenLinear ReadLinear(CheckpointReader ckpt, string weightName, long[] shape, Device device, ScalarType computeDType)
    {
        using var scope = NewDisposeScope();
        var stored = Read(ckpt, weightName);
        if (!stored.Shape.SequenceEqual(shape))
            throw new InvalidDataException($"{ckpt.Info(weightName).ShardPath}: '{weightName}{QuantStateInfix}{FourBitCodebook.Name(stored.Type)}' says shape [{string.Join(", ", stored.Shape)}], config.json implies [{string.Join(", ", shape)}]");
        return new FourBitLinear(stored.To(device), computeDType); // the module detaches its buffers from this scope
    }

    /// <summary>The 4-bit weight stored under <paramref name="weightName"/>, on the CPU.</summary>
    public static FourBitWeight Read(CheckpointReader ckpt, string weightName)
    {
        var tensors = new Dictionary<string, Tensor> { [weightName] = ckpt.Read(weightName) };
        foreach (var s in StateSuffixes)
            if (ckpt.Contains(weightName + s)) tensors[weightName + s] = ckpt.Read(weightName + s);
        string prefix = weightName[..^"weight".Length];
        try
        {
            return FourBitCheckpoint.FromTensors(tensors, prefix);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{ckpt.Info(weightName).ShardPath}: {e.Message}");
        }
    }

    /// <summary>The format the checkpoint in <paramref name="modelDir"/> is stored in ("nf4-dq", ...), or null when it is not pre-quantized.</summary>
    public static FourBitSpec? StoredFormat(string modelDir)
    {
        using var ckpt = CheckpointReader.Open(modelDir);
        string? state = ckpt.Names.FirstOrDefault(n => n.Contains(QuantStateInfix, StringComparison.Ordinal));
        if (state is null) return null;
        using var scope = NewDisposeScope();
        return (FourBitSpec)QuantSpec.Parse(Read(ckpt, state[..state.IndexOf(QuantStateInfix, StringComparison.Ordinal)]).FormatName);
    }

    /// <summary>
    /// A stored checkpoint keeps its format: asking to load it as another one (say --quantization int8 on an
    /// nf4-dq directory) would mean dequantizing and quantizing again, which is never what the user meant.
    /// "none" (the default) and the stored format itself are accepted.
    /// </summary>
    public static void RequireCompatible(string modelDir, QuantSpec requested)
    {
        var stored = StoredFormat(modelDir);
        if (stored is null || requested is DenseSpec { DType: null } || requested == stored) return;
        throw new ArgumentException($"--quantization {requested}: {modelDir} is already quantized as {stored} (bitsandbytes 4-bit); omit --quantization or pass {stored}, or quantize the original weights");
    }

    /// <summary>What <see cref="Write"/> produced.</summary>
    public sealed record Summary(int QuantizedTensors, int CopiedTensors, IReadOnlyList<string> Files, long Bytes);

    /// <summary>
    /// Writes <paramref name="modelDir"/> with every decoder projection in <paramref name="spec"/>'s 4-bit format into
    /// <paramref name="outDir"/>: into a sibling temporary directory first, renamed when complete, so a crash never
    /// leaves a half-written model. An existing non-empty <paramref name="outDir"/> is refused unless
    /// <paramref name="overwrite"/>.
    /// The safetensors header lists every tensor's byte length before any data, and a quant_state's JSON length
    /// depends on its nested_offset (printed like Python's repr): so each projection is quantized once to plan the
    /// layout and again while writing, instead of keeping the whole quantized model in memory.
    /// </summary>
    public static Summary Write(string modelDir, string outDir, FourBitSpec spec, bool overwrite = false,
        long maxShardBytes = CheckpointWriter.DefaultMaxShardBytes)
    {
        string source = Path.GetFullPath(modelDir), target = Path.GetFullPath(outDir).TrimEnd(Path.DirectorySeparatorChar);
        if (source.TrimEnd(Path.DirectorySeparatorChar) == target)
            throw new IOException($"--out '{outDir}' is the model directory itself; write the quantized model elsewhere");
        if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any() && !overwrite)
            throw new IOException($"--out '{outDir}' exists and is not empty; pass --overwrite to replace it");
        if (File.Exists(target)) throw new IOException($"--out '{outDir}' is a file; give a directory");
        LlamaConfig.Load(modelDir); // a readable Llama config before minutes of work

        using var ckpt = CheckpointReader.Open(modelDir);
        if (IsQuantized(ckpt))
            throw new InvalidDataException($"{modelDir}: already a 4-bit checkpoint; quantize the original weights instead");
        var layout = Plan(ckpt, spec);

        string staging = target + ".tmp-" + Guid.NewGuid().ToString("N")[..8];
        try
        {
            var current = new Dictionary<string, Tensor>();
            FourBitWeight? held = null;
            Tensor Produce(string name)
            {
                if (DecoderLinear.IsMatch(name))
                {
                    using var dense = ckpt.Read(name);
                    held = Quantize(dense, spec, name);
                    current = FourBitCheckpoint.ToTensors(held, name[..^"weight".Length]);
                }
                if (!current.Remove(name, out var t)) return ckpt.Read(name);
                if (current.Count == 0 && held is not null)
                {
                    // All keys of this weight are out; the writer disposes each one it gets, and the keys hold
                    // the scales themselves but only a view of the packed codes.
                    held.Packed.Dispose();
                    held = null;
                }
                return t;
            }
            var files = CheckpointWriter.Write(staging, layout, Produce, maxShardBytes);
            WriteConfig(modelDir, staging, spec);
            foreach (var file in Directory.EnumerateFiles(modelDir).Where(IsTokenizerFile))
                File.Copy(file, Path.Combine(staging, Path.GetFileName(file)));
            if (Directory.Exists(target)) Directory.Delete(target, recursive: true);
            Directory.Move(staging, target);
            long bytes = Directory.EnumerateFiles(target).Sum(f => new FileInfo(f).Length);
            int quantized = layout.Count(e => DecoderLinear.IsMatch(e.Name));
            return new Summary(quantized, ckpt.Names.Count - quantized, files, bytes);
        }
        catch
        {
            try { if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>Every output tensor's name, dtype and shape, in file order; projections become their bitsandbytes keys.</summary>
    static List<SafeTensors.Entry> Plan(CheckpointReader ckpt, FourBitSpec spec)
    {
        var layout = new List<SafeTensors.Entry>();
        foreach (var name in ckpt.Names)
        {
            var info = ckpt.Info(name);
            if (!DecoderLinear.IsMatch(name))
            {
                layout.Add(new(name, info.DType, info.Shape));
                continue;
            }
            using var scope = NewDisposeScope();
            using var dense = ckpt.Read(name);
            foreach (var (key, t) in FourBitCheckpoint.ToTensors(Quantize(dense, spec, name), name[..^"weight".Length]))
                layout.Add(new(key, t.dtype, t.shape));
        }
        return layout;
    }

    static FourBitWeight Quantize(Tensor dense, FourBitSpec spec, string name) =>
        FourBitWeight.Quantize(dense, spec.Type, spec.BlockSize, spec.DoubleQuant, spec.NestedBlockSize, name);

    /// <summary>
    /// config.json with the block transformers' BitsAndBytesConfig.to_dict() writes for load_in_4bit, so
    /// `AutoModelForCausalLM.from_pretrained` recognises the directory (it quantizes nothing, it reads the state).
    /// </summary>
    static void WriteConfig(string modelDir, string outDir, FourBitSpec spec)
    {
        var config = UserFile.ReadJsonNode(Path.Combine(modelDir, LlamaConfig.FileName))!.AsObject();
        config["quantization_config"] = BitsAndBytesConfig(spec, "bfloat16");
        File.WriteAllText(Path.Combine(outDir, LlamaConfig.FileName), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    /// <summary>
    /// transformers' BitsAndBytesConfig(load_in_4bit=True, ...).to_dict(), keys sorted as it serialises them: what a
    /// config.json carries for a bitsandbytes 4-bit checkpoint. The output head stays dense (llm_int8_skip_modules).
    /// </summary>
    public static JsonObject BitsAndBytesConfig(FourBitSpec spec, string computeDType) => new()
    {
        ["_load_in_4bit"] = true,
        ["_load_in_8bit"] = false,
        ["bnb_4bit_compute_dtype"] = computeDType,
        ["bnb_4bit_quant_storage"] = "uint8",
        ["bnb_4bit_quant_type"] = FourBitCodebook.Name(spec.Type),
        ["bnb_4bit_use_double_quant"] = spec.DoubleQuant,
        ["llm_int8_enable_fp32_cpu_offload"] = false,
        ["llm_int8_has_fp16_weight"] = false,
        ["llm_int8_skip_modules"] = new JsonArray(LinearPolicies.OutputHead),
        ["llm_int8_threshold"] = 6.0,
        ["load_in_4bit"] = true,
        ["load_in_8bit"] = false,
        ["quant_method"] = "bitsandbytes",
    };

    static bool IsTokenizerFile(string path)
    {
        string name = Path.GetFileName(path);
        return name.StartsWith("tokenizer", StringComparison.Ordinal)
            || name is "special_tokens_map.json" or "added_tokens.json" or "generation_config.json";
    }
}
