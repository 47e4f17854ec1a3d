using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// A model whose linears can be listed by module path and replaced one by one: the seam adapters attach through
/// (QLoraNet.Peft.LoraApplier wraps a frozen linear and puts the wrapper in its slot). Paths are Hugging Face
/// module paths ("model.layers.0.self_attn.q_proj", "lm_head"), what peft's target_modules match against.
/// </summary>
public interface IReplaceableLinears
{
    /// <summary>Every linear slot, in model order.</summary>
    IReadOnlyList<string> LinearPaths { get; }

    /// <summary>The output head among <see cref="LinearPaths"/>, or null when there is none (tied); "all-linear" LoRA leaves it out.</summary>
    string? HeadPath { get; }

    /// <summary>The module in slot <paramref name="path"/> (a frozen linear, or what replaced it).</summary>
    nn.Module<Tensor, Tensor> GetLinear(string path);

    /// <summary>The model's forward-pass counter (what wrappers may key per-pass values on), or null when it has none.</summary>
    ForwardPasses? Passes => null;

    /// <summary>Puts <paramref name="module"/> in slot <paramref name="path"/>; forward uses it from then on.</summary>
    void ReplaceLinear(string path, nn.Module<Tensor, Tensor> module);
}
