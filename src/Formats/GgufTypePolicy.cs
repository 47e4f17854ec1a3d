namespace QLoraNet.Formats;

/// <summary>
/// Which ggml type each tensor gets, following llama.cpp's own tools so that our files look like theirs:
/// <list type="bullet">
/// <item>1-D tensors and every <c>*_norm.weight</c> stay F32 ("most of the codebase that takes in 1D tensors or
///   norms only handles F32": convert_hf_to_gguf.py prepare_tensors; llama-quantize never quantizes them either);</item>
/// <item>f16: every other tensor F16 (convert_hf_to_gguf --outtype f16);</item>
/// <item>q8_0: every other tensor Q8_0, token_embd and output included (convert_hf_to_gguf --outtype q8_0);</item>
/// <item>q4_0: every other tensor Q4_0, except output.weight (or token_embd.weight when the embeddings are tied and
///   there is no output.weight), which llama-quantize gives Q6_K (llama-quant.cpp llama_tensor_get_type_impl);
///   QLoraNet has no Q6_K writer and uses Q8_0 there, a little larger and a little more accurate;</item>
/// <item>a quantized type needs rows (the last torch dim) that are a multiple of 32; other tensors fall back to F16
///   with a warning (the choice; llama-quantize would refuse Q4_0 for them).</item>
/// </list>
/// </summary>
public static class GgufTypePolicy
{
    public static GgmlType Choose(string ggufName, IReadOnlyList<long> shape, GgufExportType type, bool hasOutputTensor, out string? warning)
    {
        warning = null;
        if (shape.Count <= 1 || ggufName.EndsWith("_norm.weight", StringComparison.Ordinal)) return GgmlType.F32;
        var chosen = type switch
        {
            GgufExportType.F16 => GgmlType.F16,
            GgufExportType.Q8_0 => GgmlType.Q8_0,
            GgufExportType.Q4_0 when IsOutputHead(ggufName, hasOutputTensor) => GgmlType.Q8_0,
            GgufExportType.Q4_0 => GgmlType.Q4_0,
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
        };
        int block = GgmlTypes.BlockSize(chosen);
        if (shape[^1] % block != 0)
        {
            warning = $"{ggufName}: rows of {shape[^1]} values are not a multiple of {block}; written as f16 instead of {GgmlTypes.Name(chosen)}";
            return GgmlType.F16;
        }
        return chosen;
    }

    static bool IsOutputHead(string ggufName, bool hasOutputTensor) =>
        ggufName == GgufTensorNames.Output || (!hasOutputTensor && ggufName == GgufTensorNames.TokenEmbedding);

    /// <summary>general.file_type: llama.cpp's LLAMA_FTYPE (gguf-py LlamaFileType) naming the dominant type.</summary>
    public static uint FileType(GgufExportType type) => type switch
    {
        GgufExportType.F16 => 1,    // MOSTLY_F16
        GgufExportType.Q4_0 => 2,   // MOSTLY_Q4_0
        GgufExportType.Q8_0 => 7,   // MOSTLY_Q8_0
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
    };

    public static GgufExportType Parse(string text) => text.ToLowerInvariant() switch
    {
        "f16" => GgufExportType.F16,
        "q8_0" => GgufExportType.Q8_0,
        "q4_0" => GgufExportType.Q4_0,
        _ => throw new ArgumentException($"--type '{text}' is not supported for GGUF; use f16, q8_0 or q4_0"),
    };
}
