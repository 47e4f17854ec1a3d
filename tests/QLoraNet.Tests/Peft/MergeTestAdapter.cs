using QLoraNet.Formats;
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

    /// <summary>
    /// How far two fp32 computations of the same logits may drift apart when they differ only in rounding (merged
    /// W + s·B·A in one matmul vs base and adapter matmuls added, accumulation orders of different CPUs): each
    /// linear a token passes through is an fp32 accumulation of length n (its input size), whose rounding is bounded
    /// with high probability by lambda sqrt(n) u relative to its terms (Higham &amp; Mary 2019, thm 2.4; lambda = 6:
    /// probability 1 - 3e-8 per bound). Along the forward the independent roundings add in quadrature, so the
    /// logits move by at most lambda sqrt(N) u max|logit|, N = the sum of the input sizes of every linear on the
    /// path: per layer q, k, v, o, gate, up (hidden each) and down (intermediate), plus the head (hidden). On the
    /// tiny model N = 4 (6·256 + 688) + 256 = 9152 and the bound is 574 u max|logit| = 4e-4 at max|logit| ~ 12
    /// (measured: 8.6e-6 on an AMD EPYC, 1.24e-5 on an Intel Xeon); a real merge error moves them by 0.1 or more.
    /// </summary>
    public static double Fp32Tolerance(Tensor logits)
    {
        var a = ModelFamilies.Load(Paths.TinyModel);
        long n = a.NumLayers * a.LayerLinears.Sum(l => l.InFeatures) + a.Hidden;
        using var max = logits.abs().max();
        return 6 * Math.Sqrt(n) * 5.9604644775390625e-8 * max.item<float>();
    }

    public static double MaxAbsDiff(Tensor a, Tensor b)
    {
        using var d = (a - b).abs().max();
        return d.item<float>();
    }
}
