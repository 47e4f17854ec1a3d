namespace QLoraNet.Formats;

/// <summary>
/// Everything about a decoder-only transformer that config.json decides, as one immutable value: derived once by a
/// family parser (<see cref="ModelFamilies"/>) and read by every consumer (loader, quantize-on-load, LoRA targeting,
/// merge, GGUF export, `inspect`, memory estimates, stored checkpoints). In particular the list of linears of a
/// decoder layer (<see cref="LayerLinears"/>: their Hugging Face paths and shapes) and the head's name
/// (<see cref="HeadName"/>) exist here and nowhere else. Modelled on litgpt's Config: plain fields per feature
/// (norm, activation, biases, RoPE, attention window, soft-caps, embedding scale), with neutral values for a
/// family that does not use one; derived values are computed, never stored twice.
/// Parameter names and module paths follow the Hugging Face state dict (model.embed_tokens, model.layers.{i}.*,
/// model.norm, lm_head), which every supported family shares.
/// </summary>
public sealed record ModelArchitecture
{
    public const string ConfigFileName = "config.json";

    /// <summary>The family whose parser produced this ("llama").</summary>
    public required string Family { get; init; }

    /// <summary>config.json's model_type and architectures, as read.</summary>
    public required string ModelType { get; init; }
    public required IReadOnlyList<string> Architectures { get; init; }

    public required int NumLayers { get; init; }
    public required int Hidden { get; init; }
    public required int Intermediate { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }

    /// <summary>Per-head dimension; hidden / heads unless config.json sets head_dim (Gemma's is independent).</summary>
    public required int HeadDim { get; init; }

    public required int VocabSize { get; init; }
    public required int MaxPositions { get; init; }

    public required NormKind Norm { get; init; }
    public required double NormEps { get; init; }
    public required Activation Activation { get; init; }

    /// <summary>The output head reuses the token embedding (no lm_head.weight needed).</summary>
    public required bool TiedHead { get; init; }

    public required RopeSettings Rope { get; init; }
    public required SpecialTokenIds Tokens { get; init; }

    /// <summary>The linears of every decoder layer, in checkpoint order, with paths relative to the layer.</summary>
    public required IReadOnlyList<LayerLinear> LayerLinears { get; init; }

    /// <summary>The norm weights of every decoder layer.</summary>
    public required IReadOnlyList<LayerNormWeight> LayerNorms { get; init; }

    /// <summary>config.json's torch_dtype (or dtype): the dtype the weights were published in.</summary>
    public string TorchDtype { get; init; } = "float32";

    /// <summary>Sliding attention window per layer (Mistral: every layer; Gemma 2: every other one); null entries,
    /// or a null list, mean full causal attention.</summary>
    public IReadOnlyList<int?>? AttentionWindows { get; init; }

    /// <summary>Gemma 2's tanh soft-cap of attention scores (scores = cap · tanh(scores / cap)); null = none.</summary>
    public double? AttentionSoftCap { get; init; }

    /// <summary>Gemma 2's tanh soft-cap of the final logits; null = none.</summary>
    public double? FinalLogitSoftCap { get; init; }

    /// <summary>Gemma 2's query_pre_attn_scalar: scores are scaled by its inverse square root instead of head_dim's.</summary>
    public double? QueryPreAttentionScalar { get; init; }

    /// <summary>Gemma multiplies the embedding output by sqrt(hidden) (in the compute dtype); Llama does not.</summary>
    public bool ScaleEmbeddings { get; init; }

    // ---- checkpoint names (the Hugging Face state dict) ----

    public string LayersPrefix { get; init; } = "model.layers.";
    public string EmbeddingName { get; init; } = "model.embed_tokens";
    public string FinalNormName { get; init; } = "model.norm";

    /// <summary>The output head's module name; the base formats keep it dense and "all-linear" LoRA leaves it out.</summary>
    public string HeadName { get; init; } = "lm_head";

    // ---- derived ----

    public string HeadWeight => HeadName + ".weight";
    public string EmbeddingWeight => EmbeddingName + ".weight";
    public string FinalNormWeight => FinalNormName + ".weight";

    /// <summary>"model.layers.{layer}."</summary>
    public string LayerPrefix(int layer) => $"{LayersPrefix}{layer}.";

    /// <summary>The attention window of <paramref name="layer"/>, or null for full causal attention.</summary>
    public int? AttentionWindow(int layer) => AttentionWindows is { } w ? w[layer] : null;

    /// <summary>The factor on q·k: query_pre_attn_scalar^-0.5 when set, else head_dim^-0.5 (as transformers writes
    /// it, a power, so the double is the one it computes).</summary>
    public double QueryScale => Math.Pow(QueryPreAttentionScalar ?? HeadDim, -0.5);

    /// <summary>Whether attention scores need more than SDPA's default 1/sqrt(head_dim) scaling: a soft-cap or another scale.</summary>
    public bool HasCustomAttentionScores => AttentionSoftCap is not null || QueryPreAttentionScalar is double s && s != HeadDim;

    /// <summary>The distinct linear names of a decoder layer ("q_proj", ...): the valid LoRA target names.</summary>
    public IReadOnlyList<string> LinearNames => LayerLinears.Select(l => l.Name).Distinct().ToList();

    /// <summary>Module paths of every decoder-layer linear, layer by layer: what a base format stores.</summary>
    public IEnumerable<string> BaseLinearPaths =>
        Enumerable.Range(0, NumLayers).SelectMany(i => LayerLinears.Select(l => LayerPrefix(i) + l.Path));

    /// <summary>True when <paramref name="tensorName"/> is the weight of a decoder-layer linear
    /// ("model.layers.3.mlp.up_proj.weight"): the tensors a base format quantizes. The head is not one.</summary>
    public bool IsBaseLinearWeight(string tensorName) =>
        TryLayerPart(tensorName, out _, out var part) && LayerLinears.Any(l => part == l.Path + ".weight");

    /// <summary>Splits "model.layers.{i}.{part}" into i and part; false for names outside the decoder layers.</summary>
    public bool TryLayerPart(string tensorName, out int layer, out string part)
    {
        layer = -1;
        part = "";
        if (!tensorName.StartsWith(LayersPrefix, StringComparison.Ordinal)) return false;
        int dot = tensorName.IndexOf('.', LayersPrefix.Length);
        if (dot < 0 || !int.TryParse(tensorName.AsSpan(LayersPrefix.Length, dot - LayersPrefix.Length), out layer)
            || layer < 0 || layer >= NumLayers) return false;
        part = tensorName[(dot + 1)..];
        return true;
    }

    /// <summary>Every tensor a checkpoint must hold, with its shape; the head only when untied.</summary>
    public IReadOnlyList<ExpectedTensor> ExpectedTensors()
    {
        var e = new List<ExpectedTensor> { new(EmbeddingWeight, [VocabSize, Hidden], TensorRole.Embedding) };
        for (int i = 0; i < NumLayers; i++)
        {
            string p = LayerPrefix(i);
            foreach (var l in LayerLinears)
            {
                e.Add(new(p + l.Path + ".weight", [l.OutFeatures, l.InFeatures], TensorRole.Linear));
                if (l.HasBias) e.Add(new(p + l.Path + ".bias", [l.OutFeatures], TensorRole.Bias));
            }
            foreach (var n in LayerNorms) e.Add(new(p + n.Path + ".weight", [Hidden], TensorRole.Norm));
        }
        e.Add(new(FinalNormWeight, [Hidden], TensorRole.Norm));
        if (!TiedHead) e.Add(new(HeadWeight, [VocabSize, Hidden], TensorRole.Head));
        return e;
    }

    /// <summary>Parameters of the linears (and their biases) of one decoder layer.</summary>
    public long LayerLinearParameters => LayerLinears.Sum(l => l.Parameters);

    /// <summary>Parameter count of the full model: embedding, linears, norms, and the head unless tied.</summary>
    public long ParameterCount =>
        (long)VocabSize * Hidden * (TiedHead ? 1 : 2)
        + NumLayers * (LayerLinearParameters + (long)LayerNorms.Count * Hidden)
        + Hidden;
}
