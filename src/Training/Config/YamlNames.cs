using System.Text;

namespace QLoraNet.Training.Config;

/// <summary>
/// The YAML spelling of enum members (Llama2Chat -> "llama2-chat", Bf16 -> "bf16"), so that the schema's choices
/// are written once, as C# enums, and error messages can list them.
/// </summary>
public static class YamlNames
{
    public static string Of<T>(T value) where T : struct, Enum => Spell(value.ToString());

    public static IReadOnlyList<string> Choices<T>() where T : struct, Enum =>
        Enum.GetValues<T>().Select(v => Of(v)).ToArray();

    public static bool TryParse<T>(string text, out T value) where T : struct, Enum
    {
        foreach (var v in Enum.GetValues<T>())
            if (string.Equals(Of(v), text, StringComparison.OrdinalIgnoreCase)) { value = v; return true; }
        value = default;
        return false;
    }

    static string Spell(string pascal)
    {
        var sb = new StringBuilder(pascal.Length + 4);
        for (int i = 0; i < pascal.Length; i++)
        {
            char c = pascal[i];
            if (i > 0 && char.IsUpper(c)) sb.Append('-');
            sb.Append(char.ToLowerInvariant(c));
        }
        return sb.ToString();
    }
}
