namespace QLoraNet.Formats;

/// <summary>
/// The llama.cpp architecture each model family exports to: Llama 2 / Llama 3 and Mistral (v0.1-style, no
/// architecture of its own in llama.cpp's converter) to <c>llama</c>, Qwen2 to <c>qwen2</c>, Gemma to <c>gemma</c>,
/// Gemma 2 to <c>gemma2</c>. Adding one is a file implementing <see cref="IGgufArchitecture"/> and a line here.
/// </summary>
public static class GgufArchitectures
{
    static readonly IReadOnlyDictionary<string, IGgufArchitecture> ByFamily = new Dictionary<string, IGgufArchitecture>
    {
        ["llama"] = new GgufLlamaArchitecture(),
        ["mistral"] = new GgufLlamaArchitecture(),
        ["qwen2"] = new GgufQwen2Architecture(),
        ["gemma"] = new GgufGemmaArchitecture(),
        ["gemma2"] = new GgufGemma2Architecture(),
    };

    public static IGgufArchitecture For(ModelArchitecture arch, string modelDir) =>
        ByFamily.TryGetValue(arch.Family, out var a) ? a
            : throw new NotSupportedException($"{modelDir}: GGUF export of the {arch.Family} family is not supported; it exports {string.Join(", ", ByFamily.Keys)}");
}
