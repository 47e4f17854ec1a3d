namespace QLoraNet.Formats;

/// <summary>
/// One model family (Llama, later Mistral, Qwen2, Gemma, ...): which config.json files it reads and how it turns
/// one into a <see cref="ModelArchitecture"/>. A family refuses, by name, every value it cannot describe (a RoPE
/// scaling it does not know, an activation it has no member for) before any weight is read.
/// </summary>
public interface IModelFamily
{
    /// <summary>Short name, e.g. "llama".</summary>
    string Name { get; }

    /// <summary>config.json model_type values this family reads (e.g. "llama").</summary>
    IReadOnlyList<string> ModelTypes { get; }

    /// <summary>config.json architectures entries this family reads (e.g. "LlamaForCausalLM").</summary>
    IReadOnlyList<string> Architectures { get; }

    ModelArchitecture Parse(HfConfigJson config);
}
