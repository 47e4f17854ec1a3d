using System.Globalization;
using QLoraNet.Quant;
using TorchSharp;

namespace QLoraNet.Cli;

/// <summary>
/// The share of input columns each LLM.int8() linear of a model sent through its 16-bit part (the outlier features
/// of Dettmers et al. 2022, section 4), read from the linears' own counters after a run (`eval`, the training summary).
/// </summary>
public static class OutlierReport
{
    /// <summary>(module path, mean outlier-column fraction per forward) for every LLM.int8() linear that ran.</summary>
    public static IReadOnlyList<(string Module, double Fraction, long Forwards)> Collect(torch.nn.Module model) =>
        model.named_modules()
            .Where(m => m.module is LlmInt8Linear l && l.Outliers.Forwards > 0)
            .Select(m => (Name(m.name), ((LlmInt8Linear)m.module).Outliers.Fraction, ((LlmInt8Linear)m.module).Outliers.Forwards))
            .ToList();

    /// <summary>Lines for the console: a header and one line per linear, e.g. "  model.layers.0.mlp.down_proj  1.27 %".</summary>
    public static IEnumerable<string> Lines(IReadOnlyList<(string Module, double Fraction, long Forwards)> rows)
    {
        if (rows.Count == 0) yield break;
        yield return string.Create(CultureInfo.InvariantCulture,
            $"llm-int8 outlier columns (mean share of a forward's input columns with any |x| >= threshold; overall {rows.Average(r => r.Fraction) * 100:F2} %):");
        int width = rows.Max(r => r.Module.Length);
        foreach (var (module, fraction, _) in rows)
            yield return string.Create(CultureInfo.InvariantCulture, $"  {module.PadRight(width)}  {fraction * 100,6:F2} %");
    }

    /// <summary>The Hugging Face path of a module: LoRA wraps the base linear as "base_layer", which is dropped.</summary>
    static string Name(string path) => path.EndsWith(".base_layer", StringComparison.Ordinal) ? path[..^".base_layer".Length] : path;
}
