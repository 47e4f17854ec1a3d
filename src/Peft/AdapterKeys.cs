namespace QLoraNet.Peft;

/// <summary>
/// Tensor names in peft's adapter_model.safetensors. peft saves the state dict of `PeftModel.base_model`
/// (a LoraModel whose `.model` is the transformers model) with the adapter name removed, so a LoRA factor of module
/// `model.layers.0.self_attn.q_proj` is stored as `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`.
/// Our LoraLinear names its parameters `lora_A.weight` / `lora_B.weight`, so the mapping is a fixed prefix.
/// </summary>
public static class AdapterKeys
{
    public const string Prefix = "base_model.model.";
    public const string A = "lora_A";
    public const string B = "lora_B";

    /// <summary>Whether a model parameter name (as in named_parameters) is a LoRA factor.</summary>
    public static bool IsLoraParameter(string parameterName) =>
        parameterName.EndsWith($".{A}.weight", StringComparison.Ordinal)
        || parameterName.EndsWith($".{B}.weight", StringComparison.Ordinal);

    /// <summary>The peft key of factor <paramref name="factor"/> ("lora_A" or "lora_B") of the module at <paramref name="modulePath"/>.</summary>
    public static string ToPeft(string modulePath, string factor) => $"{Prefix}{modulePath}.{factor}.weight";

    /// <summary>Splits a peft key into the module path and factor; false for any key that is not a LoRA factor.</summary>
    public static bool TryParse(string peftKey, out string modulePath, out string factor)
    {
        modulePath = factor = "";
        if (!peftKey.StartsWith(Prefix, StringComparison.Ordinal)) return false;
        foreach (var f in new[] { A, B })
        {
            var suffix = $".{f}.weight";
            if (peftKey.EndsWith(suffix, StringComparison.Ordinal) && peftKey.Length > Prefix.Length + suffix.Length)
            {
                modulePath = peftKey[Prefix.Length..^suffix.Length];
                factor = f;
                return true;
            }
        }
        return false;
    }
}
