using System.Text.Json.Nodes;
using QLoraNet.Formats;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models;

/// <summary>A random, untied, one-layer Llama written as config.json + model.safetensors into a temp directory,
/// small enough to corrupt in every way a loader must catch.</summary>
public static class SyntheticLlama
{
    public const int Vocab = 16, Hidden = 8, Intermediate = 12, Heads = 2, KvHeads = 1, HeadDim = 4;

    public static JsonObject Config() => new()
    {
        ["architectures"] = new JsonArray("LlamaForCausalLM"),
        ["model_type"] = "llama",
        ["vocab_size"] = Vocab,
        ["hidden_size"] = Hidden,
        ["intermediate_size"] = Intermediate,
        ["num_hidden_layers"] = 1,
        ["num_attention_heads"] = Heads,
        ["num_key_value_heads"] = KvHeads,
        ["rms_norm_eps"] = 1e-5,
        ["tie_word_embeddings"] = false,
    };

    public static Dictionary<string, Tensor> Tensors()
    {
        using var rng = new Generator(0);
        Tensor R(params long[] shape) => randn(shape, generator: rng).to(ScalarType.BFloat16);
        return new()
        {
            ["model.embed_tokens.weight"] = R(Vocab, Hidden),
            ["model.layers.0.self_attn.q_proj.weight"] = R(Heads * HeadDim, Hidden),
            ["model.layers.0.self_attn.k_proj.weight"] = R(KvHeads * HeadDim, Hidden),
            ["model.layers.0.self_attn.v_proj.weight"] = R(KvHeads * HeadDim, Hidden),
            ["model.layers.0.self_attn.o_proj.weight"] = R(Hidden, Heads * HeadDim),
            ["model.layers.0.mlp.gate_proj.weight"] = R(Intermediate, Hidden),
            ["model.layers.0.mlp.up_proj.weight"] = R(Intermediate, Hidden),
            ["model.layers.0.mlp.down_proj.weight"] = R(Hidden, Intermediate),
            ["model.layers.0.input_layernorm.weight"] = ones(Hidden, ScalarType.BFloat16),
            ["model.layers.0.post_attention_layernorm.weight"] = ones(Hidden, ScalarType.BFloat16),
            ["model.norm.weight"] = ones(Hidden, ScalarType.BFloat16),
            ["lm_head.weight"] = R(Vocab, Hidden),
        };
    }

    /// <summary>Writes the model into <paramref name="dir"/> after letting the test edit the config and tensors.</summary>
    public static string Write(string dir, Action<JsonObject>? editConfig = null, Action<Dictionary<string, Tensor>>? editTensors = null)
    {
        var config = Config();
        editConfig?.Invoke(config);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        var tensors = Tensors();
        editTensors?.Invoke(tensors);
        SafeTensors.Write(Path.Combine(dir, "model.safetensors"), tensors);
        foreach (var t in tensors.Values) t.Dispose();
        return dir;
    }
}
