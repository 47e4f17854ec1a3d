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
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return Parse(doc.RootElement, path);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message.Split('.')[0]})");
        }
    }

    public static LlamaConfig Parse(JsonElement c, string path)
    {
        if (c.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: expected a JSON object");
        var archs = c.TryGetProperty("architectures", out var a) && a.ValueKind == JsonValueKind.Array
            ? a.EnumerateArray().Select(x => x.GetString() ?? "").ToList() : new List<string>();
        string modelType = Str(c, "model_type") ?? "";
        if (!archs.Contains("LlamaForCausalLM") && modelType != "llama")
            throw new NotSupportedException($"{path}: architecture {(archs.Count > 0 ? string.Join(", ", archs) : $"model_type '{modelType}'")} is not supported; QLoraNet loads LlamaForCausalLM (model_type \"llama\")");

        int hidden = ReqInt(c, "hidden_size", path);
        int heads = ReqInt(c, "num_attention_heads", path);
        int kvHeads = OptInt(c, "num_key_value_heads") ?? heads;
        int headDim = OptInt(c, "head_dim") ?? hidden / heads;
        if (heads % kvHeads != 0) throw new InvalidDataException($"{path}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");
        string act = Str(c, "hidden_act") ?? "silu";
        if (act != "silu") throw new NotSupportedException($"{path}: hidden_act '{act}' is not supported (Llama uses silu)");
        if (Bool(c, "attention_bias") == true) throw new NotSupportedException($"{path}: attention_bias true is not supported");
        if (Bool(c, "mlp_bias") == true) throw new NotSupportedException($"{path}: mlp_bias true is not supported");

        double ropeTheta = 10000.0;
        if (c.TryGetProperty("rope_theta", out var rt) && rt.ValueKind == JsonValueKind.Number) ropeTheta = rt.GetDouble();
        foreach (var key in new[] { "rope_parameters", "rope_scaling" })
        {
            if (!c.TryGetProperty(key, out var rp) || rp.ValueKind != JsonValueKind.Object) continue;
            string type = Str(rp, "rope_type") ?? Str(rp, "type") ?? "default";
            if (type != "default")
                throw new NotSupportedException($"{path}: {key} type '{type}' is not implemented (only default RoPE is); remove it or use a model without RoPE scaling");
            if (rp.TryGetProperty("rope_theta", out var t2) && t2.ValueKind == JsonValueKind.Number) ropeTheta = t2.GetDouble();
        }

        var eos = new List<int>();
        if (c.TryGetProperty("eos_token_id", out var e))
        {
            if (e.ValueKind == JsonValueKind.Number) eos.Add(e.GetInt32());
            else if (e.ValueKind == JsonValueKind.Array) eos.AddRange(e.EnumerateArray().Select(x => x.GetInt32()));
        }
        if (eos.Count == 0) eos.Add(2);

        return new LlamaConfig(
            VocabSize: ReqInt(c, "vocab_size", path),
            HiddenSize: hidden,
            IntermediateSize: ReqInt(c, "intermediate_size", path),
            NumHiddenLayers: ReqInt(c, "num_hidden_layers", path),
            NumAttentionHeads: heads,
            NumKeyValueHeads: kvHeads,
            HeadDim: headDim,
            RmsNormEps: c.TryGetProperty("rms_norm_eps", out var eps) && eps.ValueKind == JsonValueKind.Number ? eps.GetDouble() : 1e-6,
            RopeTheta: ropeTheta,
            MaxPositionEmbeddings: OptInt(c, "max_position_embeddings") ?? 2048,
            TieWordEmbeddings: Bool(c, "tie_word_embeddings") ?? false,
            BosTokenId: OptInt(c, "bos_token_id") ?? 1,
            EosTokenIds: eos,
            TorchDtype: Str(c, "torch_dtype") ?? Str(c, "dtype") ?? "float32",
            Architectures: archs);
    }

    static int ReqInt(JsonElement c, string key, string path) =>
        OptInt(c, key) ?? throw new InvalidDataException($"{path}: missing required field '{key}'");

    static int? OptInt(JsonElement c, string key) =>
        c.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : null;

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
