namespace QLoraNet.Peft;

/// <summary>
/// What <see cref="LoraApplier"/> needs to put LoRA on a model: plain values, mirroring peft's LoraConfig fields of
/// the same meaning (r, lora_alpha, lora_dropout, use_rslora, target_modules, layers_to_transform).
/// </summary>
/// <param name="R">rank of every adapter.</param>
/// <param name="Alpha">LoRA alpha (scaling = alpha / r, or alpha / sqrt(r) with rsLoRA).</param>
/// <param name="Dropout">dropout probability on the adapters' input.</param>
/// <param name="UseRsLora">scale by alpha / sqrt(r) (Kalajdzievski 2023) instead of alpha / r.</param>
/// <param name="TargetModules">
/// module names to wrap, matched against the last component(s) of a module path ("q_proj" matches
/// "model.layers.0.self_attn.q_proj"); or the single entry <see cref="AllLinear"/>.
/// </param>
/// <param name="LayerIndices">wrap only modules under `layers.&lt;i&gt;.` for these i; null = every layer.</param>
/// <param name="Seed">seed for the A matrices' initial values; null = torch's default generator.</param>
public sealed record LoraSettings(
    int R = 8,
    double Alpha = 16,
    double Dropout = 0.05,
    bool UseRsLora = false,
    IReadOnlyList<string>? TargetModules = null,
    IReadOnlyList<int>? LayerIndices = null,
    long? Seed = null)
{
    /// <summary>peft's shorthand: every frozen linear except the output head.</summary>
    public const string AllLinear = "all-linear";

    /// <summary>The four attention projections of a Llama layer (the default of this project's configs).</summary>
    public static readonly IReadOnlyList<string> DefaultTargets = ["q_proj", "k_proj", "v_proj", "o_proj"];

    public IReadOnlyList<string> Targets => TargetModules ?? DefaultTargets;

    public bool IsAllLinear => Targets.Count == 1 && Targets[0] == AllLinear;
}
