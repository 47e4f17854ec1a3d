using System.Text.Json;

namespace QLoraNet.Formats;

/// <summary>
/// The fields of a Hugging Face Llama <c>config.json</c> that decide the model's shape and numerics.
/// RoPE: Llama-2 checkpoints write <c>rope_theta</c> at the top level (absent means 10000); transformers 5 writes
/// <c>rope_parameters: {rope_theta, rope_type}</c>. Only the default (unscaled) RoPE is implemented: any other
/// <c>rope_scaling</c>/<c>rope_type</c> is refused by name rather than silently computed wrong.
/// </summary>
public sealed record LlamaConfig(
    int VocabSize,
    int HiddenSize,
    int IntermediateSize,
    int NumHiddenLayers,
    int NumAttentionHeads,
    int NumKeyValueHeads,
    int HeadDim,
    double RmsNormEps,
    double RopeTheta,
    int MaxPositionEmbeddings,
    bool TieWordEmbeddings,
    int BosTokenId,
    IReadOnlyList<int> EosTokenIds,
    string TorchDtype,
    IReadOnlyList<string> Architectures)
{
    public const string FileName = "config.json";

    public static LlamaConfig Load(string pathOrDir)
    {
        string path = Directory.Exists(pathOrDir) ? Path.Combine(pathOrDir, FileName) : pathOrDir;
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: not found (a Hugging Face model directory needs a config.json)", path);
        using var doc = UserFile.ReadJson(path, what: "model config");
        return Parse(doc.RootElement, path);
    }

    public static LlamaConfig Parse(JsonElement c, string path)
    {
        if (c.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: expected a JSON object");
        var archs = c.TryGetProperty("architectures", out var a) && a.ValueKind == JsonValueKind.Array
            ? a.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString()! : x.GetRawText()).ToList() : new List<string>();
        string modelType = Str(c, "model_type") ?? "";
        if (!archs.Contains("LlamaForCausalLM") && modelType != "llama")
            throw new NotSupportedException($"{path}: architecture {(archs.Count > 0 ? SafeText.Clip(string.Join(", ", archs), 80) : $"model_type {SafeText.Quote(modelType)}")} is not supported; QLoraNet loads LlamaForCausalLM (model_type \"llama\")");

        int hidden = ReqInt(c, "hidden_size", path);
        int heads = ReqInt(c, "num_attention_heads", path);
        int kvHeads = OptInt(c, "num_key_value_heads", path) ?? heads;
        int vocab = ReqInt(c, "vocab_size", path), intermediate = ReqInt(c, "intermediate_size", path), layers = ReqInt(c, "num_hidden_layers", path);
        int maxPositions = OptInt(c, "max_position_embeddings", path) ?? 2048;
        ConfigLimits.Check(path, vocab, hidden, intermediate, layers, heads, kvHeads, OptInt(c, "head_dim", path), maxPositions);
        int headDim = OptInt(c, "head_dim", path) ?? hidden / heads;
        string act = Str(c, "hidden_act") ?? "silu";
        if (act != "silu") throw new NotSupportedException($"{path}: hidden_act {SafeText.Quote(act)} is not supported (Llama uses silu)");
        if (Bool(c, "attention_bias") == true) throw new NotSupportedException($"{path}: attention_bias true is not supported");
        if (Bool(c, "mlp_bias") == true) throw new NotSupportedException($"{path}: mlp_bias true is not supported");

        double ropeTheta = 10000.0;
        if (c.TryGetProperty("rope_theta", out var rt) && rt.ValueKind == JsonValueKind.Number) ropeTheta = Positive(rt, "rope_theta", path);
        foreach (var key in new[] { "rope_parameters", "rope_scaling" })
        {
            if (!c.TryGetProperty(key, out var rp) || rp.ValueKind != JsonValueKind.Object) continue;
            string type = Str(rp, "rope_type") ?? Str(rp, "type") ?? "default";
            if (type != "default")
                throw new NotSupportedException($"{path}: {key} type {SafeText.Quote(type)} is not implemented (only default RoPE is); remove it or use a model without RoPE scaling");
            if (rp.TryGetProperty("rope_theta", out var t2) && t2.ValueKind == JsonValueKind.Number) ropeTheta = Positive(t2, $"{key}.rope_theta", path);
        }

        var eos = new List<int>();
        if (c.TryGetProperty("eos_token_id", out var e))
        {
            if (e.ValueKind == JsonValueKind.Number) eos.Add(TokenId(e, "eos_token_id", vocab, path));
            else if (e.ValueKind == JsonValueKind.Array) eos.AddRange(e.EnumerateArray().Select(x => TokenId(x, "eos_token_id", vocab, path)));
        }
        if (eos.Count == 0) eos.Add(2);

        return new LlamaConfig(
            VocabSize: vocab,
            HiddenSize: hidden,
            IntermediateSize: intermediate,
            NumHiddenLayers: layers,
            NumAttentionHeads: heads,
            NumKeyValueHeads: kvHeads,
            HeadDim: headDim,
            RmsNormEps: c.TryGetProperty("rms_norm_eps", out var eps) && eps.ValueKind == JsonValueKind.Number ? Positive(eps, "rms_norm_eps", path) : 1e-6,
            RopeTheta: ropeTheta,
            MaxPositionEmbeddings: maxPositions,
            TieWordEmbeddings: Bool(c, "tie_word_embeddings") ?? false,
            BosTokenId: c.TryGetProperty("bos_token_id", out var bos) && bos.ValueKind == JsonValueKind.Number ? TokenId(bos, "bos_token_id", vocab, path) : 1,
            EosTokenIds: eos,
            TorchDtype: Str(c, "torch_dtype") ?? Str(c, "dtype") ?? "float32",
            Architectures: archs);
    }

    static int ReqInt(JsonElement c, string key, string path) =>
        OptInt(c, key, path) ?? throw new InvalidDataException($"{path}: missing required field '{key}'");

    /// <summary>An integer field; null when absent or JSON null, an error naming the field when it is anything else.</summary>
    static int? OptInt(JsonElement c, string key, string path)
    {
        if (!c.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i)) return i;
        throw new InvalidDataException($"{path}: '{key}' must be an integer below 2^31, got {SafeText.Clip(v.GetRawText(), 40)}");
    }

    static int TokenId(JsonElement v, string key, int vocab, string path) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int id) && id >= 0 && id < vocab ? id
            : throw new InvalidDataException($"{path}: '{key}' {SafeText.Clip(v.GetRawText(), 40)} is not a token id below vocab_size {vocab}");

    static double Positive(JsonElement v, string key, string path) =>
        v.TryGetDouble(out double d) && double.IsFinite(d) && d > 0 ? d
            : throw new InvalidDataException($"{path}: '{key}' must be a positive finite number, got {SafeText.Clip(v.GetRawText(), 40)}");

    static bool? Bool(JsonElement c, string key) =>
        c.TryGetProperty(key, out var v) && (v.ValueKind == JsonValueKind.True || v.ValueKind == JsonValueKind.False) ? v.GetBoolean() : null;

    static string? Str(JsonElement c, string key) =>
        c.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    /// <summary>Parameter count of the full model (embeddings, linears, norms; the head unless tied).</summary>
    public long ParameterCount =>
        (long)VocabSize * HiddenSize * (TieWordEmbeddings ? 1 : 2)
        + NumHiddenLayers * (LayerLinearParameters + 2L * HiddenSize)
        + HiddenSize;

    /// <summary>Parameters of the seven projections of one decoder layer.</summary>
    public long LayerLinearParameters =>
        (long)HiddenSize * NumAttentionHeads * HeadDim * 2          // q_proj, o_proj
        + (long)HiddenSize * NumKeyValueHeads * HeadDim * 2         // k_proj, v_proj
        + 3L * HiddenSize * IntermediateSize;                       // gate, up, down
}
