using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>
/// The LoRA adapters: W x + (Alpha / R) * B A x on each target linear (Hu et al. 2021), or Alpha / sqrt(R) with
/// rsLoRA (Kalajdzievski 2023). <see cref="TargetModules"/> holds Llama linear names (default: the attention
/// projections q/k/v/o, as the design brief and peft do); <c>all-linear</c> in YAML
/// expands to all seven, which the QLoRA paper found necessary to match full fine-tuning (sec. 4).
/// <see cref="Layers"/> restricts adapters to those decoder layer indices (null: every layer).
/// </summary>
public sealed record LoraConfig(
    int R,
    double Alpha,
    double Dropout,
    IReadOnlyList<string> TargetModules,
    IReadOnlyList<int>? Layers,
    bool Rslora)
{
    /// <summary>Names of the linears of a Llama decoder layer, in checkpoint order.</summary>
    public static readonly IReadOnlyList<string> LlamaLinearNames =
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    public const string AllLinear = "all-linear";

    /// <summary>The attention projections: the default targets (the design brief's; peft's for Llama too).</summary>
    public static readonly IReadOnlyList<string> AttentionNames = ["q_proj", "k_proj", "v_proj", "o_proj"];

    public static LoraConfig Default { get; } = new(16, 32, 0.05, AttentionNames, null, false);

    /// <summary>The factor on B A x.</summary>
    public double Scaling => Rslora ? Alpha / Math.Sqrt(R) : Alpha / R;

    internal static LoraConfig Bind(ConfigSection s)
    {
        var d = Default;
        var r = s.Int("r", d.R, 1, 4096);
        var alpha = s.Double("alpha", d.Alpha, 0, minExclusive: true);
        var dropout = s.Double("dropout", d.Dropout, 0, 1);
        var targets = s.OptionalStringList("target_modules") ?? d.TargetModules.ToList();
        var layers = s.OptionalIntList("layers", 0);
        var rslora = s.Bool("rslora", d.Rslora);
        s.Finish();
        if (dropout >= 1) throw s.ErrorAt("dropout", $"'{s.Full("dropout")}' must be in [0, 1); got {dropout}");
        return new LoraConfig(r, alpha, dropout, ResolveTargets(s, targets), layers, rslora);
    }

    static IReadOnlyList<string> ResolveTargets(ConfigSection s, IReadOnlyList<string> targets)
    {
        if (targets is [AllLinear]) return LlamaLinearNames;
        if (targets.Count == 0) throw s.ErrorAt("target_modules", $"'{s.Full("target_modules")}' is empty; name at least one of {AllLinear}, {string.Join(", ", LlamaLinearNames)}");
        foreach (var t in targets)
            if (!LlamaLinearNames.Contains(t))
                throw s.ErrorAt("target_modules", $"'{s.Full("target_modules")}' has unknown module {QLoraNet.Formats.SafeText.Quote(t, 40)}; valid: {AllLinear} (alone) or any of {string.Join(", ", LlamaLinearNames)}");
        if (targets.Distinct().Count() != targets.Count)
            throw s.ErrorAt("target_modules", $"'{s.Full("target_modules")}' names a module twice: {QLoraNet.Formats.SafeText.Clip(string.Join(", ", targets), 200)}");
        return targets;
    }

    internal YamlMappingNode ToYaml() => YamlOut.Map(
        ("r", YamlOut.Scalar(R)), ("alpha", YamlOut.Scalar(Alpha)), ("dropout", YamlOut.Scalar(Dropout)),
        ("target_modules", YamlOut.List(TargetModules)), ("layers", YamlOut.List(Layers)),
        ("rslora", YamlOut.Scalar(Rslora)));
}
