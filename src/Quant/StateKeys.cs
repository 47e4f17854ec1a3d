namespace QLoraNet.Quant;

/// <summary>
/// The tensor keys a <see cref="CheckpointLayout"/> stores for one linear, named from its logical weight key
/// "<c>{module}.weight</c>" in one of two ways:
/// <list type="bullet">
/// <item>beside it, "<c>{module}.{suffix}</c>": AutoGPTQ's and AutoAWQ's qweight/qzeros/scales, hqq's W_q/scale/zero,
///   bitsandbytes 8-bit's SCB;</item>
/// <item>after it, "<c>{module}.weight{suffix}</c>": bitsandbytes 4-bit's ".absmax", ".quant_state.bitsandbytes__nf4",
///   compressed-tensors' and BitNet's "_scale".</item>
/// </list>
/// <see cref="WithWeight"/> says whether the layout also keeps a tensor under the weight key itself (bitsandbytes'
/// packed "weight"; GPTQ has none). One value per layout answers both directions (a key's weight, a weight's keys),
/// so the two cannot disagree.
/// </summary>
public sealed record StateKeys(IReadOnlyList<string> Suffixes, bool AfterWeight, bool WithWeight)
{
    /// <summary>Keys "{module}.{suffix}".</summary>
    public static StateKeys Beside(bool withWeight, params string[] suffixes) => new(suffixes, false, withWeight);

    /// <summary>Keys "{module}.weight{suffix}".</summary>
    public static StateKeys After(bool withWeight, params string[] suffixes) => new(suffixes, true, withWeight);

    /// <summary>The key of <paramref name="suffix"/> for <paramref name="weightName"/>. A name that does not end in
    /// "weight" is taken as the module itself ("...q_proj" -> "...q_proj.qweight").</summary>
    public string Key(string weightName, string suffix) => Anchor(weightName) + suffix;

    /// <summary>True when <paramref name="tensorName"/> is one of the state keys (not the weight's own); gives the weight.</summary>
    public bool IsStateKey(string tensorName, out string weightName)
    {
        foreach (var s in Suffixes)
        {
            string tail = AfterWeight ? ".weight" + s : "." + s;
            if (!tensorName.EndsWith(tail, StringComparison.Ordinal)) continue;
            weightName = AfterWeight ? tensorName[..^s.Length] : tensorName[..^s.Length] + "weight";
            return true;
        }
        weightName = "";
        return false;
    }

    /// <summary>The keys of <paramref name="weightName"/> that <paramref name="contains"/> holds: the weight's own
    /// first (when the layout has one), then the state keys in <see cref="Suffixes"/> order.</summary>
    public IEnumerable<string> Of(string weightName, Func<string, bool> contains)
    {
        var keys = Suffixes.Select(s => Key(weightName, s));
        return (WithWeight ? keys.Prepend(weightName) : keys).Where(contains);
    }

    string Anchor(string weightName) =>
        AfterWeight ? weightName
        : weightName.EndsWith("weight", StringComparison.Ordinal) ? weightName[..^"weight".Length] : weightName + ".";
}
