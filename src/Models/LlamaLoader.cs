using QLoraNet.Formats;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// Builds a <see cref="LlamaForCausalLM"/> from a Hugging Face model directory (config.json + safetensors, single or
/// sharded). The whole checkpoint is validated from the headers first (names, shapes, dtypes), so a bad file fails
/// in a second instead of after minutes of quantization; tensors are then streamed one at a time in file order and
/// handed to the caller's policy, so peak host memory is about one tensor plus the model being built.
/// </summary>
public static class LlamaLoader
{
    public const string Architecture = "LlamaForCausalLM";

    enum Kind { Linear, Frozen }

    sealed record Expected(long[] Shape, Kind Kind);

    public static LlamaForCausalLM Load(string modelDir, LoadOptions options)
    {
        if (!Directory.Exists(modelDir)) throw new DirectoryNotFoundException($"model directory '{modelDir}' does not exist");
        var config = LlamaConfig.Load(modelDir);
        if (config.Architectures.Count > 0 && !config.Architectures.Contains(Architecture))
            throw new NotSupportedException($"{Path.Combine(modelDir, LlamaConfig.FileName)}: architecture {string.Join(", ", config.Architectures)} is not supported; QLoraNet loads {Architecture}");

        using var ckpt = CheckpointReader.Open(modelDir, options.AllowNonFiniteWeights);
        var expected = ExpectedTensors(config, tieHead: config.TieWordEmbeddings);
        Validate(ckpt, expected, modelDir);

        var frozenDType = options.FrozenDType ?? options.ComputeDType;
        var linears = new Dictionary<string, FrozenLinear>();
        var frozen = new Dictionary<string, Tensor>();
        try
        {
            foreach (var name in ckpt.Names)
            {
                if (!expected.TryGetValue(name, out var want)) continue;     // tolerated extras (see Validate)
                if (want.Kind == Kind.Linear && QuantizedCheckpoint.IsStored(ckpt, name))
                {
                    // Stored in 4 bits (a `quantize` output): the codes are read back, never quantized again.
                    linears[name[..^".weight".Length]] = QuantizedCheckpoint.ReadLinear(ckpt, name, want.Shape, options.Device, options.ComputeDType);
                    continue;
                }
                using var raw = ckpt.Read(name);
                if (want.Kind == Kind.Linear)
                {
                    using var onDevice = raw.to(options.Device);
                    string modulePath = name[..^".weight".Length];
                    linears[modulePath] = options.LinearFactory(modulePath, onDevice);
                }
                else
                {
                    frozen[name] = raw.to(frozenDType, options.Device, copy: true).DetachFromDisposeScope();
                }
            }
            return Assemble(config, linears, frozen, options);
        }
        catch
        {
            foreach (var l in linears.Values) l.Dispose();
            foreach (var t in frozen.Values) t.Dispose();
            throw;
        }
    }

    /// <summary>Every tensor the model needs, by Hugging Face state-dict name, with its shape from config.json.</summary>
    static Dictionary<string, Expected> ExpectedTensors(LlamaConfig c, bool tieHead)
    {
        long h = c.HiddenSize, inter = c.IntermediateSize, q = (long)c.NumAttentionHeads * c.HeadDim, kv = (long)c.NumKeyValueHeads * c.HeadDim;
        var e = new Dictionary<string, Expected> { ["model.embed_tokens.weight"] = new([c.VocabSize, h], Kind.Frozen) };
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            string p = $"model.layers.{i}.";
            e[p + "self_attn.q_proj.weight"] = new([q, h], Kind.Linear);
            e[p + "self_attn.k_proj.weight"] = new([kv, h], Kind.Linear);
            e[p + "self_attn.v_proj.weight"] = new([kv, h], Kind.Linear);
            e[p + "self_attn.o_proj.weight"] = new([h, q], Kind.Linear);
            e[p + "mlp.gate_proj.weight"] = new([inter, h], Kind.Linear);
            e[p + "mlp.up_proj.weight"] = new([inter, h], Kind.Linear);
            e[p + "mlp.down_proj.weight"] = new([h, inter], Kind.Linear);
            e[p + "input_layernorm.weight"] = new([h], Kind.Frozen);
            e[p + "post_attention_layernorm.weight"] = new([h], Kind.Frozen);
        }
        e["model.norm.weight"] = new([h], Kind.Frozen);
        if (!tieHead) e["lm_head.weight"] = new([c.VocabSize, h], Kind.Linear);
        return e;
    }

    static void Validate(CheckpointReader ckpt, Dictionary<string, Expected> expected, string modelDir)
    {
        foreach (var (name, want) in expected)
        {
            if (!ckpt.Contains(name))
                throw new InvalidDataException(name == "lm_head.weight"
                    ? $"{modelDir}: checkpoint has no 'lm_head.weight' and config.json says tie_word_embeddings is false; add the head or set tie_word_embeddings true"
                    : $"{modelDir}: checkpoint is missing tensor '{name}' (required by config.json)");
            if (want.Kind == Kind.Linear && QuantizedCheckpoint.IsStored(ckpt, name))
            {
                QuantizedCheckpoint.ValidateHeader(ckpt, name, want.Shape);
                continue;
            }
            var info = ckpt.Info(name);
            if (!info.Shape.SequenceEqual(want.Shape))
                throw new InvalidDataException($"{info.ShardPath}: tensor '{name}' has shape {info.ShapeText}, config.json implies [{string.Join(", ", want.Shape)}]");
            if (info.DType is not (ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float32 or ScalarType.Float64))
                throw new InvalidDataException($"{info.ShardPath}: tensor '{name}' is {info.DType}; pre-quantized weights load only in bitsandbytes 4-bit layout (with a quant_state, see `quantize`); otherwise load the original float weights");
        }
        RequireOneDTypePerKind(ckpt, expected);
        foreach (var name in ckpt.Names)
        {
            // A tied head may still be stored (HF ignores it and reuses the embedding); old checkpoints also carry
            // the derived rotary inv_freq buffers. Anything else means the config and the weights disagree.
            if (expected.ContainsKey(name) || name == "lm_head.weight" || name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal)
                || (QuantizedCheckpoint.IsStateOf(name, out var weight) && expected.ContainsKey(weight))) continue;
            throw new InvalidDataException($"{ckpt.Info(name).ShardPath}: unexpected tensor {SafeText.Quote(name)} for a {Architecture} with this config.json (wrong config or not a Llama checkpoint)");
        }
    }

    /// <summary>
    /// The dense matrices (embedding, projections, head) of a checkpoint share one dtype, and so do its norm
    /// vectors (some checkpoints keep those in fp32). A tensor whose dtype differs from the rest of its kind has
    /// had its header altered (a BF16 entry relabelled F16 has the same byte length and would load as garbage),
    /// so it is refused by name. Where the kinds are split evenly there is no majority to trust and nothing is said.
    /// </summary>
    static void RequireOneDTypePerKind(CheckpointReader ckpt, Dictionary<string, Expected> expected)
    {
        var dense = expected.Keys.Where(n => !QuantizedCheckpoint.IsStored(ckpt, n)).Select(ckpt.Info).ToList();
        foreach (var kind in dense.GroupBy(i => i.Shape.Length))
        {
            var byDType = kind.GroupBy(i => i.DType).OrderByDescending(g => g.Count()).ToList();
            if (byDType.Count < 2 || byDType[0].Count() == byDType[1].Count()) continue;
            var odd = byDType[1].OrderBy(i => i.Name, StringComparer.Ordinal).First();
            throw new InvalidDataException(
                $"{odd.ShardPath}: tensor '{odd.Name}' is {SafeTensorsDType.Name(odd.DType)} but the other {byDType[0].Count()} " +
                $"{(kind.Key == 1 ? "norm weights" : "weight matrices")} are {SafeTensorsDType.Name(byDType[0].Key)}; its header was altered or the checkpoint mixes files from different saves");
        }
    }

    static LlamaForCausalLM Assemble(LlamaConfig c, Dictionary<string, FrozenLinear> linears, Dictionary<string, Tensor> frozen, LoadOptions o)
    {
        var layers = new List<LlamaDecoderLayer>();
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            string p = $"model.layers.{i}.";
            var attn = new LlamaAttention("self_attn", i, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim,
                linears[p + "self_attn.q_proj"], linears[p + "self_attn.k_proj"], linears[p + "self_attn.v_proj"], linears[p + "self_attn.o_proj"]);
            var mlp = new LlamaMlp("mlp", linears[p + "mlp.gate_proj"], linears[p + "mlp.up_proj"], linears[p + "mlp.down_proj"]);
            layers.Add(new LlamaDecoderLayer($"layers.{i}", attn, mlp,
                new RmsNorm("input_layernorm", frozen[p + "input_layernorm.weight"], c.RmsNormEps),
                new RmsNorm("post_attention_layernorm", frozen[p + "post_attention_layernorm.weight"], c.RmsNormEps)));
        }
        var model = new LlamaModel("model", frozen["model.embed_tokens.weight"], layers,
            new RmsNorm("norm", frozen["model.norm.weight"], c.RmsNormEps),
            new RotaryEmbedding("rotary_emb", c.HeadDim, c.RopeTheta, o.ComputeDType, o.Device), o.ComputeDType);
        return new LlamaForCausalLM(Architecture, model, linears.GetValueOrDefault("lm_head"));
    }
}
