namespace QLoraNet.Training.Config;

/// <summary>
/// A configuration problem, as one line that says where (file:line, or the command-line override) and what to do,
/// e.g. <c>configs/x.yaml:12: unknown key 'lora.rank'; valid keys in 'lora': r, alpha, ...</c>.
/// </summary>
public sealed class ConfigException(string message) : Exception(message);
