using System.CommandLine;
using QLoraNet.Peft;
using QLoraNet.Quant;

namespace QLoraNet.Cli;

/// <summary>
/// The base format a verb loads the model in when an adapter is given: the option when the user set it, else the
/// format the adapter was trained on (its <see cref="AdapterProvenance"/>), else <paramref name="fallback"/>. An
/// explicit option that differs from the adapter's training format is honoured with a one-line warning on stderr:
/// the adapter learned to correct the weights it was trained on, so its outputs change on another base.
/// </summary>
public static class AdapterBase
{
    public static BaseFormat Resolve(ParseResult parsed, Option<string?> option, string? adapterDir, string fallback)
    {
        string name = option.Name;
        var provenance = adapterDir is not null && Directory.Exists(adapterDir) ? AdapterProvenance.Load(adapterDir) : null;
        string? given = parsed.GetValue(option);
        if (given is null) return provenance?.BaseFormat ?? ModelOptions.ParseFormat(fallback, name);
        var chosen = ModelOptions.ParseFormat(given, name);
        if (provenance is not null && chosen.ToString() != provenance.BaseFormat.ToString())
            parsed.InvocationConfiguration.Error.WriteLine(
                $"warning: {name} {chosen}: the adapter {adapterDir} was trained on a {provenance.BaseFormat} base ({AdapterProvenance.FileName}); its outputs differ on another base (omit {name} to use {provenance.BaseFormat})");
        return chosen;
    }
}
