namespace QLoraNet.Formats;

/// <summary>
/// llama.cpp's <c>qwen2</c> architecture (conversion/qwen.py Qwen2Model; src/models/qwen2.cpp): Llama's layer with
/// q/k/v biases (<c>blk.N.attn_q.bias</c>, ...), NEOX RoPE (rotate_half, as Hugging Face computes it), so q and k are
/// written unpermuted; the head is <c>output.weight</c> or, tied, the token embedding. Sliding windows
/// (use_sliding_window, which no published Qwen2.5 sets) are not in llama.cpp's qwen2 graph and are refused.
/// </summary>
public sealed class GgufQwen2Architecture : IGgufArchitecture
{
    public string Name => "qwen2";

    public IReadOnlyList<string> Check(ModelArchitecture arch)
    {
        if (arch.Rope.Scaling != RopeScalingKind.None)
            throw new NotSupportedException($"GGUF export of RoPE scaling '{arch.Rope.Scaling}' for qwen2 is not written");
        if (GgufArchitectureChecks.SingleWindow(arch) is int w)
            throw new NotSupportedException($"llama.cpp's qwen2 architecture has no sliding-window attention; this config uses a window of {w} (use_sliding_window)");
        GgufArchitectureChecks.RefuseCapsAndScale(arch, Name);
        return [];
    }

    public IEnumerable<KeyValuePair<string, GgufValue>> Metadata(ModelArchitecture arch) => [];
}
