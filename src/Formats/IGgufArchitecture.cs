using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// What one llama.cpp architecture needs beyond the tensors and hyperparameters every decoder shares
/// (<see cref="GgufExporter"/>, <see cref="GgufMetadata"/>, <see cref="GgufTensorNames"/>): its name, its own
/// metadata keys, how a Hugging Face tensor is turned into the one llama.cpp's graph expects (RoPE layout, norm
/// offsets, folded scales), tensors llama.cpp reads that Hugging Face computes (Llama 3's rope_freqs), and what it
/// cannot express (refused by name before any tensor is written, or a warning). One implementation per llama.cpp
/// architecture (GgufLlamaArchitecture, GgufQwen2Architecture, GgufGemmaArchitecture, GgufGemma2Architecture);
/// <see cref="GgufArchitectures"/> picks it by family. Each follows llama.cpp's own converter for that architecture
/// (convert_hf_to_gguf.py / conversion/*.py) and its loader and graph (src/models/*.cpp), which decide every detail.
/// </summary>
public interface IGgufArchitecture
{
    /// <summary>general.architecture, and the prefix of the hyperparameter keys ("llama", "qwen2", "gemma", "gemma2").</summary>
    string Name { get; }

    /// <summary>Throws NotSupportedException naming what llama.cpp's architecture cannot compute for <paramref name="arch"/>;
    /// returns warnings for what it computes only approximately.</summary>
    IReadOnlyList<string> Check(ModelArchitecture arch);

    /// <summary>Keys beyond the shared hyperparameters (soft-caps, windows, tokenizer flags), in writing order.</summary>
    IEnumerable<KeyValuePair<string, GgufValue>> Metadata(ModelArchitecture arch);

    /// <summary>False for a Hugging Face tensor llama.cpp does not load for this architecture (Gemma's tied lm_head).</summary>
    bool Loads(string hfName, ModelArchitecture arch) => true;

    /// <summary>The tensor as llama.cpp expects it under <paramref name="ggufName"/> (fp32 in, same shape out).</summary>
    Tensor Convert(string ggufName, Tensor weight, ModelArchitecture arch) => weight;

    /// <summary>Tensors llama.cpp reads that the checkpoint does not hold, with their values (1-D, fp32).</summary>
    IEnumerable<(string Name, float[] Values)> ExtraTensors(ModelArchitecture arch) => [];
}
