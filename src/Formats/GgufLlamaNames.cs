using System.Text.RegularExpressions;

namespace QLoraNet.Formats;

/// <summary>
/// Hugging Face Llama tensor names to the names llama.cpp's <c>llama</c> architecture loads
/// (gguf-py constants.py MODEL_TENSOR / tensor_mapping.py; llama-arch.cpp LLM_TENSOR_NAMES).
/// </summary>
public static partial class GgufLlamaNames
{
    public const string TokenEmbedding = "token_embd.weight";
    public const string OutputNorm = "output_norm.weight";
    public const string Output = "output.weight";

    static readonly Dictionary<string, string> LayerParts = new()
    {
        ["input_layernorm.weight"] = "attn_norm.weight",
        ["self_attn.q_proj.weight"] = "attn_q.weight",
        ["self_attn.k_proj.weight"] = "attn_k.weight",
        ["self_attn.v_proj.weight"] = "attn_v.weight",
        ["self_attn.o_proj.weight"] = "attn_output.weight",
        ["post_attention_layernorm.weight"] = "ffn_norm.weight",
        ["mlp.gate_proj.weight"] = "ffn_gate.weight",
        ["mlp.up_proj.weight"] = "ffn_up.weight",
        ["mlp.down_proj.weight"] = "ffn_down.weight",
    };

    /// <summary>Per-layer GGUF name suffixes, for checking that a checkpoint is complete.</summary>
    public static IEnumerable<string> LayerNames(int layer) => LayerParts.Values.Select(p => $"blk.{layer}.{p}");

    /// <summary>
    /// The GGUF name of <paramref name="hfName"/>; null for tensors llama.cpp recomputes and does not load
    /// (<c>rotary_emb.inv_freq</c> buffers of old checkpoints). Any other unknown name is an error rather than a
    /// silently dropped weight.
    /// </summary>
    public static string? Map(string hfName)
    {
        if (hfName.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal)) return null;
        if (hfName == "model.embed_tokens.weight") return TokenEmbedding;
        if (hfName == "model.norm.weight") return OutputNorm;
        if (hfName == "lm_head.weight") return Output;
        var m = LayerName().Match(hfName);
        if (m.Success && LayerParts.TryGetValue(m.Groups[2].Value, out var part)) return $"blk.{m.Groups[1].Value}.{part}";
        throw new NotSupportedException($"tensor {SafeText.Quote(hfName)} has no llama.cpp counterpart (is this a plain LlamaForCausalLM checkpoint? biases and extra modules are not supported)");
    }

    [GeneratedRegex(@"^model\.layers\.(\d+)\.(.+)$")]
    private static partial Regex LayerName();
}
