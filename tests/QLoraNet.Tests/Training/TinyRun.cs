using QLoraNet.Formats;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Training;

/// <summary>
/// A fine-tuning run that costs milliseconds per step, for tests that run `train` many times or as real processes:
/// a one-layer Llama of width 16 (random, fp32) with the tiny model's 32000-piece SentencePiece tokenizer, 24 one-line
/// completion examples, and a config file whose output goes to <see cref="OutDir"/>. Extra YAML lines replace keys by
/// the CLI's own <c>key=value</c> overrides.
/// </summary>
public sealed class TinyRun : IDisposable
{
    public TempDir Dir { get; } = Paths.Temp();
    public string Model => Dir["model"];
    public string Data => Dir["train.jsonl"];
    public string ConfigPath => Dir["run.yaml"];
    public string OutDir => Dir["out"];

    public TinyRun(int maxSteps = 12, int saveEvery = 1, int keepLast = 2)
    {
        WriteModel(Model);
        File.WriteAllLines(Data, Enumerable.Range(1, 24).Select(i => $"{{\"text\": \"Order {i} of the Beacon {100 + i} headlamp ships in {i % 5 + 1} days.\"}}"));
        File.WriteAllText(ConfigPath, $$"""
            model: {path: {{Model}}, dtype: fp32, device: cpu}
            quantization: none
            lora: {r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}
            data: {train: [{{Data}}], format: completion, max_seq_len: 32, packing: false}
            training:
              max_steps: {{maxSteps}}
              micro_batch_size: 1
              learning_rate: 1.0e-3
              warmup_steps: 2
              save_every: {{saveEvery}}
              eval_every: 0
              log_every: 1
              seed: 1
            output: {dir: {{OutDir}}, keep_last: {{keepLast}}}
            """);
    }

    public string CheckpointsDir => Path.Combine(OutDir, "checkpoints");

    /// <summary>A random one-layer Llama whose vocabulary fits the tiny model's tokenizer (which is copied in).</summary>
    static void WriteModel(string dir)
    {
        Directory.CreateDirectory(dir);
        const int vocab = 32000, hidden = 16, inter = 32, heads = 2, kv = 1, headDim = 8;
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": {{vocab}}, "hidden_size": {{hidden}},
             "intermediate_size": {{inter}}, "num_hidden_layers": 1, "num_attention_heads": {{heads}}, "num_key_value_heads": {{kv}},
             "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2}
            """);
        using var rng = new Generator(7);
        Tensor R(params long[] shape) => (randn(shape, generator: rng) * 0.05f).contiguous();
        var tensors = new Dictionary<string, Tensor>
        {
            ["model.embed_tokens.weight"] = R(vocab, hidden),
            ["model.layers.0.self_attn.q_proj.weight"] = R(heads * headDim, hidden),
            ["model.layers.0.self_attn.k_proj.weight"] = R(kv * headDim, hidden),
            ["model.layers.0.self_attn.v_proj.weight"] = R(kv * headDim, hidden),
            ["model.layers.0.self_attn.o_proj.weight"] = R(hidden, heads * headDim),
            ["model.layers.0.mlp.gate_proj.weight"] = R(inter, hidden),
            ["model.layers.0.mlp.up_proj.weight"] = R(inter, hidden),
            ["model.layers.0.mlp.down_proj.weight"] = R(hidden, inter),
            ["model.layers.0.input_layernorm.weight"] = ones(hidden),
            ["model.layers.0.post_attention_layernorm.weight"] = ones(hidden),
            ["model.norm.weight"] = ones(hidden),
            ["lm_head.weight"] = R(vocab, hidden),
        };
        SafeTensors.Write(Path.Combine(dir, "model.safetensors"), tensors);
        foreach (var t in tensors.Values) t.Dispose();
        foreach (var name in new[] { "tokenizer.model", "tokenizer_config.json" })
            File.Copy(Path.Combine(Paths.TinyModel, name), Path.Combine(dir, name));
    }

    public void Dispose() => Dir.Dispose();
}
