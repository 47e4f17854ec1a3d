using TorchSharp;

namespace QLoraNet.Formats;

/// <summary>safetensors dtype strings (huggingface/safetensors, format spec) and their TorchSharp equivalents.</summary>
public static class SafeTensorsDType
{
    static readonly Dictionary<string, torch.ScalarType> ByName = new()
    {
        ["F64"] = torch.ScalarType.Float64, ["F32"] = torch.ScalarType.Float32, ["F16"] = torch.ScalarType.Float16,
        ["BF16"] = torch.ScalarType.BFloat16, ["I64"] = torch.ScalarType.Int64, ["I32"] = torch.ScalarType.Int32,
        ["I16"] = torch.ScalarType.Int16, ["I8"] = torch.ScalarType.Int8, ["U8"] = torch.ScalarType.Byte,
        ["BOOL"] = torch.ScalarType.Bool,
    };

    public static IEnumerable<string> Supported => ByName.Keys;

    public static bool TryParse(string name, out torch.ScalarType type) => ByName.TryGetValue(name, out type);

    public static string Name(torch.ScalarType type) =>
        ByName.FirstOrDefault(kv => kv.Value == type).Key
        ?? throw new ArgumentException($"dtype {type} cannot be stored in safetensors by QLoraNet");

    public static int ElementSize(torch.ScalarType type) => type switch
    {
        torch.ScalarType.Float64 or torch.ScalarType.Int64 => 8,
        torch.ScalarType.Float32 or torch.ScalarType.Int32 => 4,
        torch.ScalarType.Float16 or torch.ScalarType.BFloat16 or torch.ScalarType.Int16 => 2,
        torch.ScalarType.Int8 or torch.ScalarType.Byte or torch.ScalarType.Bool => 1,
        _ => throw new ArgumentException($"unsupported dtype {type}"),
    };
}
