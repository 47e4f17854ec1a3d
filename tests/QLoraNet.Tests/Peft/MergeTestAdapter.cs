using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>
/// A trained-looking adapter for the tiny model: LoRA applied with <see cref="LoraApplier"/>, B set to small random
/// values (a fresh adapter has B = 0 and merges to the base, which would prove nothing), saved with AdapterFiles.
/// Also the loaders the merge tests compare: the base + adapter unmerged, and a merged checkpoint.
/// </summary>
public static class MergeTestAdapter
{
    public static readonly LoraSettings Settings = new(R: 8, Alpha: 16, Dropout: 0, TargetModules: ["q_proj", "v_proj", "down_proj"]);
    public const long Seed = 7;

    public static string Create(string dir, double bScale = 0.05, BaseFormat? baseFormat = null)
    {
        using var model = LoadBase(baseFormat);
        var wrapped = LoraApplier.Apply(model, Settings, Seed);
        var generator = new Generator(11);
        using (torch.no_grad())
            foreach (var (_, lora) in AdapterFiles.LoraModules(model))
            {
                using var b = torch.randn(lora.B.shape, generator: generator).mul_(bScale);
                lora.B.copy_(b);
            }
        AdapterFiles.Save(dir, model, AdapterConfig.From(Settings, wrapped, Paths.TinyModel));
        return dir;
    }

    /// <summary>The tiny model with its projections in <paramref name="baseFormat"/> (fp32 compute, CPU), as training holds it.</summary>
    public static LlamaForCausalLM LoadBase(BaseFormat? baseFormat = null, string? dir = null) =>
        ModelBuilder.Build(dir ?? Paths.TinyModel, new ModelBuildOptions(CPU, ScalarType.Float32, baseFormat ?? new DenseFormat(null))).Model;

    /// <summary>Base in <paramref name="baseFormat"/> plus the adapter, unmerged (LoraLinear wrappers).</summary>
    public static LlamaForCausalLM LoadUnmerged(string adapterDir, BaseFormat? baseFormat = null)
    {
        var model = LoadBase(baseFormat);
        AdapterFiles.ApplyAndLoad(adapterDir, model);
        model.eval();
        return model;
    }

    public static readonly long[] Prompt = [1, 450, 377, 744, 338, 263, 1556, 29892, 322, 278, 916];

    /// <summary>Logits (1, T, vocab) fp32 for <see cref="Prompt"/>.</summary>
    public static Tensor Logits(LlamaForCausalLM model)
    {
        using var ids = torch.tensor(Prompt).unsqueeze(0);
        using (torch.no_grad()) return model.forward(ids);
    }

    public static double MaxAbsDiff(Tensor a, Tensor b)
    {
        using var d = (a - b).abs().max();
        return d.item<float>();
    }
}
