using QLoraNet.Formats;
using QLoraNet.Kernels;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// Builds a <see cref="LlamaForCausalLM"/> from a Hugging Face model directory (config.json + safetensors, single or
/// sharded) of any family in <see cref="ModelFamilies"/> that <see cref="ArchitectureSupport"/> admits. The family
/// record says which tensors must exist and their shapes; the whole checkpoint is validated against it from the
/// headers first (names, shapes, dtypes), so a bad file fails in a second instead of after minutes of
/// quantization; tensors are then streamed one at a time in file order and each linear weight is handed to the
/// caller's policy (quantize-on-load), so peak host memory is about one tensor plus the model being built.
/// A linear stored pre-quantized in a known <see cref="CheckpointLayout"/> (a `quantize` output) is read back as is.
/// </summary>
public static class LlamaLoader
{
    public static LlamaForCausalLM Load(string modelDir, LoadOptions options)
    {
        if (!Directory.Exists(modelDir)) throw new DirectoryNotFoundException($"model directory '{modelDir}' does not exist");
        var arch = ModelFamilies.Load(modelDir);
        ArchitectureSupport.Require(arch, Path.Combine(modelDir, ModelArchitecture.ConfigFileName));

        using var ckpt = CheckpointReader.Open(modelDir, options.AllowNonFiniteWeights);
        var expected = arch.ExpectedTensors().ToDictionary(e => e.Name, StringComparer.Ordinal);
        var quantization = QuantizedCheckpoint.QuantizationConfigOf(modelDir);
        Validate(ckpt, arch, expected, modelDir, quantization);

        var frozenDType = options.FrozenDType ?? options.ComputeDType;
        var kernels = options.Kernels ?? KernelSelection.Portable;
        var linears = new Dictionary<string, FrozenLinear>();
        var frozen = new Dictionary<string, Tensor>();
        try
        {
            foreach (var want in expected.Values)
            {
                // Stored pre-quantized (a `quantize` output): the codes are read back, never quantized again. A layout
                // may keep no "...weight" tensor at all (GPTQ's qweight), so these are found by the layout, not the file.
                if (IsLinear(want) && QuantizedCheckpoint.LayoutOf(ckpt, want.Name, quantization) is { } layout)
                    linears[want.ModulePath] = QuantizedCheckpoint.ReadLinear(ckpt, layout, want.Name, want.Shape, options.Device, options.ComputeDType, kernels);
            }
            foreach (var name in ckpt.Names)
            {
                if (!expected.TryGetValue(name, out var want)) continue;         // tolerated extras (see Validate)
                bool isLinear = IsLinear(want);
                if (isLinear && linears.ContainsKey(want.ModulePath)) continue;   // read from its stored layout above
                using var raw = ckpt.Read(name);
                if (isLinear)
                {
                    using var onDevice = raw.to(options.Device);
                    linears[want.ModulePath] = options.LinearFactory(want.ModulePath, onDevice);
                }
                else
                {
                    frozen[name] = raw.to(frozenDType, options.Device, copy: true).DetachFromDisposeScope();
                }
            }
            if (arch.TernaryLinears) RequireTernary(arch, linears, modelDir);
            return Assemble(arch, linears, frozen, options, kernels.Fused);
        }
        catch
        {
            foreach (var l in linears.Values) l.Dispose();
            foreach (var t in frozen.Values) t.Dispose();
            throw;
        }
    }

    /// <summary>Checks every tensor the record expects against the checkpoint headers (names, shapes, dtypes, stored layouts).</summary>
    internal static void Validate(CheckpointReader ckpt, ModelArchitecture arch, Dictionary<string, ExpectedTensor> expected, string modelDir,
        System.Text.Json.Nodes.JsonObject? quantization)
    {
        foreach (var (name, want) in expected)
        {
            if (IsLinear(want) && QuantizedCheckpoint.LayoutOf(ckpt, name, quantization) is { } layout)
            {
                QuantizedCheckpoint.CheckHeader(ckpt, layout, name, want.Shape);
                continue;
            }
            if (!ckpt.Contains(name))
                throw new InvalidDataException(want.Role == TensorRole.Head
                    ? $"{modelDir}: checkpoint has no '{name}' and config.json says tie_word_embeddings is false; add the head or set tie_word_embeddings true"
                    : $"{modelDir}: checkpoint is missing tensor '{name}' (required by config.json)");
            var info = ckpt.Info(name);
            if (!info.Shape.SequenceEqual(want.Shape))
                throw new InvalidDataException($"{info.ShardPath}: tensor '{name}' has shape {info.ShapeText}, config.json implies [{string.Join(", ", want.Shape)}]");
            if (info.DType == ScalarType.Int8 && IsLinear(want))
                throw new InvalidDataException($"{info.ShardPath}: int8 tensor '{name}' has no '{want.ModulePath}.SCB' (its per-row absmax) beside it; a pre-quantized bitsandbytes 8-bit checkpoint needs both, re-save it or load the original float weights");
            if (info.DType is not (ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float32 or ScalarType.Float64))
                throw new InvalidDataException($"{info.ShardPath}: tensor '{name}' is {info.DType}; pre-quantized weights load only in a known layout ({string.Join(", ", BaseFormats.Layouts.Select(l => l.Name))}, see `quantize`); otherwise load the original float weights");
        }
        RequireOneDTypePerKind(ckpt, expected, quantization);
        foreach (var name in ckpt.Names)
        {
            // A tied head may still be stored (HF ignores it and reuses the embedding); old checkpoints also carry
            // the derived rotary inv_freq buffers. Anything else means the config and the weights disagree.
            if (expected.ContainsKey(name) || name == arch.HeadWeight || name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal)
                || BaseFormats.LayoutsFor(quantization).Any(l => l.IsStateKey(name, out var weight) && expected.ContainsKey(weight))) continue;
            throw new InvalidDataException($"{ckpt.Info(name).ShardPath}: unexpected tensor {SafeText.Quote(name)} for a {string.Join(", ", arch.Architectures.DefaultIfEmpty(arch.Family))} with this config.json (wrong config or not a {arch.Family} checkpoint)");
        }
    }

    /// <summary>
    /// The dense matrices (embedding, projections, head) of a checkpoint share one dtype, and so do its norm
    /// vectors (some checkpoints keep those in fp32) and its biases. A tensor whose dtype differs from the rest of
    /// its kind has had its header altered (a BF16 entry relabelled F16 has the same byte length and would load as
    /// garbage), so it is refused by name. Where a kind is split evenly there is no majority to trust and nothing is said.
    /// </summary>
    static void RequireOneDTypePerKind(CheckpointReader ckpt, Dictionary<string, ExpectedTensor> expected,
        System.Text.Json.Nodes.JsonObject? quantization)
    {
        var dense = expected.Values.Where(e => ckpt.Contains(e.Name) && !(IsLinear(e) && QuantizedCheckpoint.LayoutOf(ckpt, e.Name, quantization) is not null));
        foreach (var kind in dense.GroupBy(e => e.Role switch { TensorRole.Norm => "norm weights", TensorRole.Bias => "biases", _ => "weight matrices" }))
        {
            var byDType = kind.Select(e => ckpt.Info(e.Name)).GroupBy(i => i.DType).OrderByDescending(g => g.Count()).ToList();
            if (byDType.Count < 2 || byDType[0].Count() == byDType[1].Count()) continue;
            var odd = byDType[1].OrderBy(i => i.Name, StringComparer.Ordinal).First();
            throw new InvalidDataException(
                $"{odd.ShardPath}: tensor '{odd.Name}' is {SafeTensorsDType.Name(odd.DType)} but the other {byDType[0].Count()} " +
                $"{kind.Key} are {SafeTensorsDType.Name(byDType[0].Key)}; its header was altered or the checkpoint mixes files from different saves");
        }
    }

    /// <summary>A BitNet model computes what it was trained to only through ternary linears with 8-bit activations;
    /// any other base (nf4-dq over its bf16 master weights, say) is a different model, refused by name.</summary>
    static void RequireTernary(ModelArchitecture arch, Dictionary<string, FrozenLinear> linears, string modelDir)
    {
        foreach (var path in arch.BaseLinearPaths)
            if (linears[path].FormatName != TernaryFormat.Name)
                throw new NotSupportedException($"{modelDir}: '{path}' loads as {linears[path].FormatName}, but a {arch.Family} model's linears are BitNet b1.58 linears (ternary weights, 8-bit activations); load it with base format ternary (--quantization ternary, quantization.type: ternary) or use the packed checkpoint");
    }

    internal static bool IsLinear(ExpectedTensor t) => t.Role is TensorRole.Linear or TensorRole.Head;

    /// <param name="fused">the run's fused ops: each module is handed the one it runs (norms, RoPE, the gated unit).</param>
    static LlamaForCausalLM Assemble(ModelArchitecture a, Dictionary<string, FrozenLinear> linears, Dictionary<string, Tensor> frozen, LoadOptions o,
        FusedKernels fused)
    {
        var layers = new List<LlamaDecoderLayer>();
        for (int i = 0; i < a.NumLayers; i++)
        {
            string p = a.LayerPrefix(i);
            layers.Add(BuildLayer(a, i, l => linears[p + l.Path], name => frozen[p + name], fused));
        }
        return Assemble(a, layers, frozen[a.EmbeddingWeight], frozen[a.FinalNormWeight], linears.GetValueOrDefault(a.HeadName), o, fused);
    }

    /// <summary>
    /// Decoder layer <paramref name="i"/> of the family record from its parts: <paramref name="linear"/> gives each
    /// projection's frozen linear, <paramref name="frozen"/> a dense tensor by its name within the layer
    /// ("self_attn.q_proj.bias", "input_layernorm.weight"), <paramref name="fused"/> the run's fused ops (norms, RoPE,
    /// the gated unit). The one place layers are put together (the loader and the calibrated loader, which builds and
    /// quantizes one layer at a time).
    /// </summary>
    public static LlamaDecoderLayer BuildLayer(ModelArchitecture a, int i, Func<LayerLinear, FrozenLinear> linear, Func<string, Tensor> frozen,
        FusedKernels fused)
    {
        (LayerLinear, FrozenLinear, Tensor?) Projection(LayerLinear l) => (l, linear(l), l.HasBias ? frozen(l.Path + ".bias") : null);
        // BitNet's sub-norms live inside attention and the MLP ("self_attn.attn_sub_norm"): registered there under
        // their last name, so the module paths stay the checkpoint's.
        RmsNorm? SubNorm(NormRole role) => a.LayerNorms.FirstOrDefault(n => n.Role == role) is { } n
            ? new RmsNorm(n.Path[(n.Path.IndexOf('.') + 1)..], frozen(n.Path + ".weight"), a.NormEps, a.Norm, fused.RmsNorm) : null;
        var attn = new LlamaAttention(LlamaDecoderLayer.AttentionName, i, a.NumHeads, a.NumKvHeads, a.HeadDim,
            a.LayerLinears.Where(l => l.IsAttention).Select(Projection), a.AttentionWindow(i),
            a.HasCustomAttentionScores ? a.QueryScale : null, a.AttentionSoftCap, fused.Rope, SubNorm(NormRole.AttentionSub));
        var mlp = new LlamaMlp(LlamaDecoderLayer.MlpName, a.Activation, a.LayerLinears.Where(l => !l.IsAttention).Select(Projection), fused.Glu,
            SubNorm(NormRole.MlpSub));
        var norms = a.LayerNorms.Where(n => n.Role is not (NormRole.AttentionSub or NormRole.MlpSub))
            .Select(n => (n, new RmsNorm(n.Path, frozen(n.Path + ".weight"), a.NormEps, a.Norm, fused.RmsNorm)));
        return new LlamaDecoderLayer($"layers.{i}", attn, mlp, norms);
    }

    /// <summary>The model from its decoder layers, embedding (vocab, hidden), final norm weight and head (null when tied).</summary>
    public static LlamaForCausalLM Assemble(ModelArchitecture a, IEnumerable<LlamaDecoderLayer> layers, Tensor embedding, Tensor finalNorm,
        FrozenLinear? head, LoadOptions o, FusedKernels fused)
    {
        var model = new LlamaModel("model", embedding, layers,
            new RmsNorm("norm", finalNorm, a.NormEps, a.Norm, fused.RmsNorm),
            new RotaryEmbedding("rotary_emb", a.Rope, o.ComputeDType, o.Device), o.ComputeDType, a.ScaleEmbeddings);
        return new LlamaForCausalLM(a.Architectures.FirstOrDefault() ?? a.Family, a, model, head);
    }
}
