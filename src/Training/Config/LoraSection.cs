using QLoraNet.Peft;
using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>
/// The <c>lora:</c> section, bound to <see cref="LoraSettings"/> (the one LoRA record): W x + (alpha / r) · B A x on
/// each target linear (Hu et al. 2021), or alpha / sqrt(r) with rsLoRA (Kalajdzievski 2023). Defaults are the
/// QLoRA paper's r 16, alpha 32, dropout 0.05 on the attention projections (q/k/v/o); <c>all-linear</c> expands to
/// every linear of the model's family, which the QLoRA paper found necessary to match full fine-tuning (sec. 4).
/// Target names are checked against the model family's linear names (its config.json is read for that).
/// <c>layers</c> restricts adapters to those decoder layer indices (null: every layer). <c>init_from</c> names a
/// peft adapter directory whose factors start the run (continued training, like axolotl's lora_model_dir); it is
/// not part of <see cref="LoraSettings"/> (what an adapter computes) but of the run, so it is bound separately.
/// </summary>
internal static class LoraSection
{
    public static LoraSettings Default { get; } = new(16, 32, 0.05, false, LoraSettings.DefaultTargets, null);

    /// <param name="linearNames">the model family's linear names; null when the model could not be read (an error is reported for it).</param>
    public static LoraSettings Bind(ConfigSection s, IReadOnlyList<string>? linearNames) => Bind(s, linearNames, out _);

    /// <param name="initFrom">the <c>init_from</c> directory, checked to hold a peft adapter; null when not set.</param>
    public static LoraSettings Bind(ConfigSection s, IReadOnlyList<string>? linearNames, out string? initFrom)
    {
        var d = Default;
        var r = s.Int("r", d.R, 1, 4096);
        var alpha = s.Double("alpha", d.Alpha, 0, minExclusive: true);
        var dropout = s.Double("dropout", d.Dropout, 0, 1);
        var targets = s.OptionalStringList("target_modules") ?? d.Targets;
        var layers = s.OptionalIntList("layers", 0);
        var rslora = s.Bool("rslora", d.UseRsLora);
        initFrom = s.OptionalString("init_from");
        s.Finish();
        if (initFrom != null && !File.Exists(Path.Combine(initFrom, AdapterConfig.FileName)))
            throw s.ErrorAt("init_from", $"'{s.Full("init_from")}' directory {QLoraNet.Formats.SafeText.Quote(initFrom, 200)} holds no {AdapterConfig.FileName}; name a peft adapter directory (e.g. runs/x/final)");
        if (dropout >= 1) throw s.ErrorAt("dropout", $"'{s.Full("dropout")}' must be in [0, 1); got {dropout}");
        return new LoraSettings(r, alpha, dropout, rslora, ResolveTargets(s, targets, linearNames), layers);
    }

    static IReadOnlyList<string> ResolveTargets(ConfigSection s, IReadOnlyList<string> targets, IReadOnlyList<string>? names)
    {
        string key = s.Full("target_modules");
        if (targets.Count == 0) throw s.ErrorAt("target_modules", $"'{key}' is empty; name at least one of {LoraSettings.AllLinear}, {string.Join(", ", names ?? [])}");
        if (names is null) return targets;
        if (targets is [LoraSettings.AllLinear]) return names;
        foreach (var t in targets)
            if (!names.Contains(t))
                throw s.ErrorAt("target_modules", $"'{key}' has unknown module {QLoraNet.Formats.SafeText.Quote(t, 40)}; valid: {LoraSettings.AllLinear} (alone) or any of {string.Join(", ", names)}");
        if (targets.Distinct().Count() != targets.Count)
            throw s.ErrorAt("target_modules", $"'{key}' names a module twice: {QLoraNet.Formats.SafeText.Clip(string.Join(", ", targets), 200)}");
        return targets;
    }

    public static YamlMappingNode ToYaml(LoraSettings l, string? initFrom = null) => YamlOut.Map(
        ("r", YamlOut.Scalar(l.R)), ("alpha", YamlOut.Scalar(l.Alpha)), ("dropout", YamlOut.Scalar(l.Dropout)),
        ("target_modules", YamlOut.List(l.Targets)), ("layers", YamlOut.List(l.Layers)),
        ("rslora", YamlOut.Scalar(l.UseRsLora)), ("init_from", YamlOut.Scalar(initFrom)));
}
