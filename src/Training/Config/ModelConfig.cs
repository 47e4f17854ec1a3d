using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>
/// The base model: a Hugging Face Llama directory (config.json, safetensors, tokenizer.model), the dtype its
/// unquantized tensors are kept in, and the device. Paths are relative to the current directory.
/// <c>allow_non_finite_weights</c> loads weights holding NaN/Inf instead of refusing them by name (the CLI's
/// <c>--allow-non-finite-weights</c>).
/// </summary>
public sealed record ModelConfig(string Path, DType Dtype = DType.Bf16, DeviceKind Device = DeviceKind.Auto, bool AllowNonFiniteWeights = false)
{
    internal static ModelConfig Bind(ConfigSection s)
    {
        var path = s.RequiredString("path");
        var dtype = s.Enum("dtype", DType.Bf16);
        var device = s.Enum("device", DeviceKind.Auto);
        var allowNonFinite = s.Bool("allow_non_finite_weights", false);
        s.Finish();
        if (path.Length > 0 && !Directory.Exists(path))
            throw s.ErrorAt("path", $"model directory {QLoraNet.Formats.SafeText.Quote(path, 200)} not found (relative paths resolve from the current directory {Environment.CurrentDirectory})");
        return new ModelConfig(path, dtype, device, allowNonFinite);
    }

    internal YamlMappingNode ToYaml() => YamlOut.Map(
        ("path", YamlOut.Scalar(Path)), ("dtype", YamlOut.Scalar(Dtype)), ("device", YamlOut.Scalar(Device)),
        ("allow_non_finite_weights", YamlOut.Scalar(AllowNonFiniteWeights)));
}
