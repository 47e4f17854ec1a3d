using QLoraNet.Training.Config;

namespace QLoraNet.Tests.Training;

/// <summary>
/// A config file or override is bounded before YamlDotNet builds its tree: 40,000 levels of nesting used to
/// overflow the stack and kill the process (exit 134); now each hostile input is one line with a position.
/// </summary>
[Trait("tier", "unit")]
public sealed class BoundedYamlTests : IDisposable
{
    readonly TempDir dir = Paths.Temp();

    public BoundedYamlTests() => File.WriteAllText(dir["t.jsonl"], "{\"text\": \"hi\"}\n");

    public void Dispose() => dir.Dispose();

    string Minimal => $"model:\n  path: {Paths.TinyModel}\ndata:\n  train: {dir["t.jsonl"]}\n";

    static string ErrorOf(string yaml, params string[] overrides)
    {
        var e = Assert.Throws<ConfigException>(() => TrainConfig.Parse(yaml, "x.yaml", overrides));
        Assert.DoesNotContain("\n", e.Message);
        Assert.True(e.Message.Length < 400, e.Message);
        return e.Message;
    }

    [Fact]
    public void Forty_thousand_levels_of_flow_nesting_in_the_file_are_one_line_not_a_stack_overflow()
    {
        string deep = "lora:\n  target_modules: " + new string('[', 40_000) + new string(']', 40_000) + "\n";
        Assert.Equal("x.yaml:6: YAML nested more than 64 levels deep; a config or task file needs a handful", ErrorOf(Minimal + deep));
    }

    [Fact]
    public void Deep_nesting_in_an_override_is_one_line_naming_the_override()
    {
        string msg = ErrorOf(Minimal, "lora.target_modules=" + new string('{', 40_000));
        Assert.StartsWith("override 'lora.target_modules={{{{", msg);
        Assert.Contains("nested more than 64 levels", msg);
    }

    [Fact]
    public void Deep_block_nesting_is_refused_too()
    {
        var yaml = new System.Text.StringBuilder(Minimal + "training:\n");
        for (int i = 1; i <= 100; i++) yaml.Append(new string(' ', 2 * i)).Append($"k{i}:\n");
        Assert.Contains("nested more than 64 levels", ErrorOf(yaml.ToString()));
    }

    [Fact]
    public void Alias_bombs_are_refused()
    {
        var yaml = new System.Text.StringBuilder("a0: &a0 [x, x]\n");
        for (int i = 1; i <= 30; i++) yaml.Append($"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]\n");
        Assert.Contains("more than 100 YAML aliases", ErrorOf(yaml.ToString()));
    }

    [Fact]
    public void Unclosed_brackets_name_the_line_in_files_and_overrides()
    {
        Assert.Equal("x.yaml:6: malformed YAML: unclosed '{' (no matching '}')", ErrorOf(Minimal + "lora:\n  r: {a: 8\n  alpha: 16\n"));
        Assert.StartsWith("override 'lora.target_modules=[q_proj': malformed YAML: ", ErrorOf(Minimal, "lora.target_modules=[q_proj"));
    }

    /// <summary>YamlDotNet's parser ends a mapping after a key with no value here, which its representation model then
    /// refused with an ArgumentException and no position (yaml fuzz target, seed 0fikxUcaLOD1).</summary>
    [Fact]
    public void A_mapping_key_without_a_value_names_its_line()
    {
        Assert.Equal("x.yaml:6: malformed YAML: a mapping key without a value", ErrorOf(Minimal + "lora: {r: 8}*d:"));
        Assert.StartsWith("override 'lora={r: 8}*d:': malformed YAML: ", ErrorOf(Minimal, "lora={r: 8}*d:"));
    }

    [Fact]
    public void Oversized_overrides_and_files_and_non_regular_files_are_refused_before_parsing()
    {
        Assert.Contains("more than an override may hold", ErrorOf(Minimal, "data.system_prompt=" + new string('x', 100_000)));
        string big = dir["big.yaml"];
        File.WriteAllText(big, Minimal + "# " + new string('x', 2 << 20) + "\n");
        Assert.Contains("more than the 1048576-byte limit", Assert.Throws<ConfigException>(() => TrainConfig.Load(big)).Message);
        if (!OperatingSystem.IsWindows())
            Assert.Contains("not a regular file", Assert.Throws<ConfigException>(() => TrainConfig.Load("/dev/zero")).Message);
    }

    [Fact]
    public void Values_echoed_in_messages_are_escaped()
    {
        string msg = ErrorOf(Minimal, "training.seed=\"\\e[2J\\x07boom\"");
        Assert.DoesNotContain("\u001b", msg);
        Assert.DoesNotContain("\u0007", msg);
        Assert.True(msg.Contains("\\x1b[2J\\x07boom"), msg);
    }
}
