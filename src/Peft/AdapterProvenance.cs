using System.Text.Json;
using System.Text.Json.Nodes;
using QLoraNet.Formats;
using QLoraNet.Quant;

namespace QLoraNet.Peft;

/// <summary>
/// What an adapter was trained on, kept beside its peft files in <c>qloranet.json</c>: the base format of the frozen
/// weights during training (<see cref="BaseFormat"/>'s one spelling, e.g. <c>nf4-dq</c>). An adapter trained on an
/// NF4 base learned to correct the NF4 weights, so `generate`, `eval`, `merge` and `export` use that format by
/// default. A sidecar rather than a key in adapter_config.json: peft's config loader passes unknown keys on with a
/// warning that tells the user to upgrade peft (PeftConfigMixin.from_peft_type), which would be misleading here.
/// </summary>
public sealed record AdapterProvenance(BaseFormat BaseFormat)
{
    public const string FileName = "qloranet.json";

    /// <summary>The file is a few dozen bytes; a larger one is not ours.</summary>
    const long MaxBytes = 64 << 10;

    public void Save(string directory) => AtomicFile.WriteAllText(Path.Combine(directory, FileName),
        new JsonObject { ["base_format"] = BaseFormat.ToString() }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");

    /// <summary>The provenance in <paramref name="directory"/>; null when the adapter has none (trained elsewhere).</summary>
    public static AdapterProvenance? Load(string directory)
    {
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) return null;
        // Bounded like every file of an adapter directory (regular file, 64 KiB, strict UTF-8, nesting; issue 11).
        var root = UserFile.ReadJsonNode(path, MaxBytes, "adapter provenance file");
        if (root is not JsonObject o || !o.TryGetPropertyValue("base_format", out var node) || node is not JsonValue v
            || !v.TryGetValue(out string? spelling))
            throw new InvalidDataException($"{path}: expected {{\"base_format\": \"...\"}} (delete the file to load the adapter without it)");
        try
        {
            return new AdapterProvenance(BaseFormat.Parse(spelling));
        }
        catch (Exception e) when (e is FormatException or ArgumentException or InvalidOperationException)
        {
            throw new InvalidDataException($"{path}: base_format {SafeText.Quote(spelling, 40)}: {SafeText.Clip(e.Message.Split('\n')[0], 200)} (delete the file to load the adapter without it)");
        }
    }
}
