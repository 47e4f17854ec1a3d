using System.Text.Json;
using QLoraNet.Tests.Models;

namespace QLoraNet.Tests.Cli;

[Trait("tier", "e2e")]
public sealed class TokenizeTests : IDisposable
{
    readonly TempDir dir = Paths.Temp();

    public void Dispose() => dir.Dispose();

    string Messages(string json)
    {
        File.WriteAllText(dir["m.json"], json);
        return dir["m.json"];
    }

    [Fact]
    public void Json_ids_of_a_conversation_equal_apply_chat_template_and_mark_the_answer()
    {
        var reference = FamilyTokenizerParityTests.Reference("llama3").GetProperty("chat").GetProperty("single_turn")[0];
        string file = Messages(JsonSerializer.Serialize(new { messages = reference.GetProperty("messages") }));
        var (code, stdout, stderr) = CliRunner.Run("tokenize", "--model", Paths.Family("llama3"), "--messages", file, "--json");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var ids = doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var trained = doc.RootElement.GetProperty("trained").EnumerateArray().Select(e => e.GetBoolean()).ToArray();
        Assert.Equal(FamilyTokenizerParityTests.Ids(reference.GetProperty("ids")), ids);
        Assert.Equal(ids.Length, trained.Length);
        // The trained run is the answer and <|eot_id|> (1022), at the end.
        int first = Array.IndexOf(trained, true);
        Assert.All(trained[first..], Assert.True);
        Assert.All(trained[..first], Assert.False);
        Assert.Equal(1022, ids[^1]);
        Assert.Equal(1020, ids[first - 2]);                                // <|end_header_id|> then "\n\n" precede the answer
    }

    [Fact]
    public void Plain_output_brackets_the_trained_pieces_when_not_a_terminal()
    {
        string file = Messages("""[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}]""");
        var (code, stdout, stderr) = CliRunner.Run("tokenize", "--model", Paths.Family("qwen2"), "--messages", file);
        Assert.True(code == 0, stderr);
        var lines = stdout.Split('\n');
        Assert.Equal("56 tokens, 7 trained (template chatml); trained pieces are in [brackets]", lines[0]);
        Assert.StartsWith("<|im_start|>|s|ystem|\\n|You| are| Q|w|en|,", lines[1]);          // Qwen's default system prompt
        Assert.EndsWith("|<|im_start|>|a|ssistant|\\n|[H]|[el]|[lo]|[ th]|[ere]|[.]|[<|im_end|>]|\\n", lines[1]);
        Assert.DoesNotContain("\u001b", stdout);
        Assert.StartsWith("ids: 1020 ", lines[2]);
    }

    [Fact]
    public void Text_gives_the_default_special_tokens_and_trains_all_but_the_first()
    {
        var (code, stdout, _) = CliRunner.Run("tokenize", "--model", Paths.Family("gemma"), "--text", "Hello <end_of_turn>", "--json");
        Assert.Equal(0, code);
        Assert.Equal("{\"ids\": [2, 1005, 387, 410, 929, 6], \"trained\": [false, true, true, true, true, true]}", stdout.TrimEnd());
    }

    [Fact]
    public void Generation_prompt_and_system_role_options_work()
    {
        string file = Messages("""[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]""");
        var refused = CliRunner.Run("tokenize", "--model", Paths.Family("gemma"), "--messages", file);
        Assert.Equal(1, refused.Code);
        Assert.Contains("template 'gemma' has no system role", refused.Stderr);
        var folded = CliRunner.Run("tokenize", "--model", Paths.Family("gemma"), "--messages", file, "--system-role", "fold", "--generation-prompt", "--json");
        Assert.True(folded.Code == 0, folded.Stderr);
        using var doc = JsonDocument.Parse(folded.Stdout);
        var ids = doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var tok = QLoraNet.Models.TextTokenizers.Load(Paths.Family("gemma"));
        Assert.Equal(tok.Tokenize("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n", false).Ids, ids);
        Assert.DoesNotContain(true, doc.RootElement.GetProperty("trained").EnumerateArray().Select(e => e.GetBoolean()));
    }

    [Fact]
    public void Bad_inputs_are_one_line_errors()
    {
        var neither = CliRunner.Run("tokenize", "--model", Paths.Family("llama3"));
        Assert.Equal(1, neither.Code);
        Assert.Contains("give --text TEXT or --messages FILE.json", neither.Stderr);
        var badTemplate = CliRunner.Run("tokenize", "--model", Paths.Family("llama3"), "--text", "x", "--template", "vicuna");
        Assert.Equal(1, badTemplate.Code);
        Assert.Contains("vicuna", badTemplate.Stderr);
        var badOrder = CliRunner.Run("tokenize", "--model", Paths.Family("llama3"), "--messages", Messages("""[{"role": "assistant", "content": "x"}]"""));
        Assert.Equal(1, badOrder.Code);
        Assert.Contains("message 1 has role 'assistant' where 'user' was expected", badOrder.Stderr);
        var notJson = CliRunner.Run("tokenize", "--model", Paths.Family("llama3"), "--messages", Messages("{not json"));
        Assert.Equal(1, notJson.Code);
        Assert.Contains("not valid JSON", notJson.Stderr);
    }
}
