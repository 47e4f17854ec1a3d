namespace QLoraNet.Peft;

/// <summary>
/// The LoRA adapters of a model (Hu et al. 2021): W x + scaling · B A x on each target linear, the one record every
/// layer uses for them: the YAML config's <c>lora:</c> section binds to it, <see cref="LoraApplier"/> applies it, and
/// <see cref="AdapterConfig"/> maps it to and from peft's adapter_config.json (r, lora_alpha, lora_dropout,
/// use_rslora, target_modules, layers_to_transform).
/// </summary>
/// <param name="R">rank of every adapter.</param>
/// <param name="Alpha">LoRA alpha (scaling = alpha / r, or alpha / sqrt(r) with rsLoRA).</param>
/// <param name="Dropout">dropout probability on the adapters' input.</param>
/// <param name="UseRsLora">scale by alpha / sqrt(r) (Kalajdzievski 2023) instead of alpha / r.</param>
/// <param name="TargetModules">
/// module names to wrap, matched against the last component(s) of a module path ("q_proj" matches
/// "model.layers.0.self_attn.q_proj"); or the single entry <see cref="AllLinear"/>. The valid names are the model
/// family's linear names (QLoraNet.Formats.ModelArchitecture.LinearNames); null = <see cref="DefaultTargets"/>.
/// </param>
/// <param name="Layers">wrap only modules under `layers.&lt;i&gt;.` for these i; null = every layer.</param>
public sealed record LoraSettings(
    int R = 8,
    double Alpha = 16,
    double Dropout = 0.05,
    bool UseRsLora = false,
    IReadOnlyList<string>? TargetModules = null,
    IReadOnlyList<int>? Layers = null)
{
    /// <summary>Ranks above this are refused outright, before any factor is allocated: no layer is wider
    /// (QLoraNet.Formats.ConfigLimits.MaxHidden), and r x (in + out) per module would otherwise run away.</summary>
    public const int MaxRank = (int)QLoraNet.Formats.ConfigLimits.MaxHidden;

    /// <summary>peft's shorthand: every frozen linear except the output head.</summary>
    public const string AllLinear = "all-linear";

    /// <summary>The attention projections (the design brief's default; the QLoRA paper's own configs put LoRA on all linears).</summary>
    public static readonly IReadOnlyList<string> DefaultTargets = ["q_proj", "k_proj", "v_proj", "o_proj"];

    public IReadOnlyList<string> Targets => TargetModules ?? DefaultTargets;

    public bool IsAllLinear => Targets.Count == 1 && Targets[0] == AllLinear;

    /// <summary>The factor on B·A (<see cref="LoraMath.Scaling"/>).</summary>
    public double Scaling => LoraMath.Scaling(Alpha, R, UseRsLora);
}
