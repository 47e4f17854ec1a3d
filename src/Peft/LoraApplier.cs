using System.Text.RegularExpressions;
using QLoraNet.Kernels;
using QLoraNet.Models;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// Puts LoRA on a model by module names, the way peft's `get_peft_model` does for a LoraConfig: every frozen linear
/// whose path ends in a target name (optionally only in the listed layers) is wrapped in a <see cref="LoraLinear"/>
/// that takes its slot (<see cref="IReplaceableLinears.ReplaceLinear"/>: the model's own seam, no reflection), and
/// every other parameter of the model is frozen.
/// </summary>
public static partial class LoraApplier
{
    /// <summary>
    /// Wraps the targeted linears and freezes the rest; returns the wrapped module paths in model order.
    /// <paramref name="seed"/> seeds A's initial values (a CPU generator, so every device gets the same adapter);
    /// null draws from torch's default generator. <paramref name="dropoutRandom"/>: where every adapter draws its
    /// dropout masks (a training run's stream); null = each adapter its own (<see cref="LoraDropout"/>).
    /// <paramref name="dropoutKernel"/>: the fused dropout of the run's kernel selection; null = the torch-op reference.
    /// <paramref name="gradientKernel"/>: how the adapters' hand-written backward adds their gradients (the run's
    /// <see cref="FusedWeightGradient"/>); null = the torch-op reference.
    /// </summary>
    public static IReadOnlyList<string> Apply<TModel>(TModel model, LoraSettings settings, long? seed = null, RandomStream? dropoutRandom = null,
        FusedDropout? dropoutKernel = null, FusedWeightGradient? gradientKernel = null)
        where TModel : nn.Module, IReplaceableLinears
    {
        if (model.modules().Any(m => m is LoraLinear))
            throw new InvalidOperationException("the model already has LoRA adapters; apply LoRA once, to a model without them");
        LoraMath.Scaling(settings.Alpha, settings.R, settings.UseRsLora);   // rank checked before anything changes
        if (settings.Dropout < 0 || settings.Dropout >= 1)
            throw new ArgumentException($"LoRA dropout {settings.Dropout} must be in [0, 1)");
        var linearPaths = model.LinearPaths.Where(p => model.GetLinear(p) is FrozenLinear).ToList();
        var selected = Select(linearPaths, model.HeadPath, settings);

        using var generator = seed is long s ? new Generator((ulong)s) : null;
        // One batch of factor casts per model, its adapters joining in model order: q, k, v (and gate, up), which
        // share their down projections, then have adjacent A's (LoraFactorCasts).
        var casts = model.Passes is { } passes ? new LoraFactorCasts(passes) : null;
        foreach (var path in selected)
        {
            var wrapped = new LoraLinear((FrozenLinear)model.GetLinear(path), settings.R, settings.Alpha, settings.Dropout, settings.UseRsLora, generator, dropoutRandom, dropoutKernel, gradientKernel)
            {
                Casts = casts,
            };
            model.ReplaceLinear(path, wrapped);
        }

        FreezeAllButLora(model);
        return selected;
    }

    /// <summary>The paths among <paramref name="linearPaths"/> that <paramref name="settings"/> targets, in their order.</summary>
    /// <param name="headPath">the output head, which "all-linear" leaves alone (peft excludes the output embedding layer too).</param>
    public static IReadOnlyList<string> Select(IReadOnlyList<string> linearPaths, string? headPath, LoraSettings settings)
    {
        List<string> selected;
        if (settings.IsAllLinear)
        {
            selected = linearPaths.Where(p => p != headPath).ToList();
        }
        else
        {
            foreach (var target in settings.Targets)
            {
                if (!linearPaths.Any(p => MatchesTarget(p, target)))
                    throw new ArgumentException(
                        $"LoRA target '{target}' matches no frozen linear module; the model's linear modules are: {string.Join(", ", linearPaths.Select(LeafName).Distinct().Order(StringComparer.Ordinal))}");
            }
            selected = linearPaths.Where(p => settings.Targets.Any(t => MatchesTarget(p, t))).ToList();
        }

        if (settings.Layers is { } layers)
        {
            var present = linearPaths.Select(LayerIndex).OfType<int>().Distinct().Order().ToList();
            foreach (int layer in layers)
            {
                if (!present.Contains(layer))
                    throw new ArgumentException(
                        $"LoRA layer index {layer} does not exist; the model's layers are {string.Join(", ", present)}");
            }
            selected = selected.Where(p => LayerIndex(p) is int i && layers.Contains(i)).ToList();
        }
        return selected;
    }

    /// <summary>peft's rule for a list of names: the path equals the target or ends with "." + target.</summary>
    public static bool MatchesTarget(string path, string target) => path == target || path.EndsWith("." + target, StringComparison.Ordinal);

    /// <summary>The decoder layer a module belongs to, read from the `layers.&lt;i&gt;.` part of its path (null outside layers).</summary>
    public static int? LayerIndex(string path)
    {
        var m = LayerInPath().Match(path);
        return m.Success ? int.Parse(m.Groups[1].Value) : null;
    }

    public static string LeafName(string path) => path[(path.LastIndexOf('.') + 1)..];

    /// <summary>Only A and B train: QLoRA backpropagates through the frozen base into the adapters (Dettmers et al. 2023, §3).</summary>
    public static void FreezeAllButLora(nn.Module model)
    {
        foreach (var (name, parameter) in model.named_parameters())
            parameter.requires_grad = AdapterKeys.IsLoraParameter(name);
    }

    [GeneratedRegex(@"(?:^|\.)layers\.(\d+)\.")]
    private static partial Regex LayerInPath();
}
