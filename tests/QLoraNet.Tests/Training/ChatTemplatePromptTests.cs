using System.Text.Json;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;

namespace QLoraNet.Tests.Training;

/// <summary>The chat prompt of --apply-chat-template is transformers' apply_chat_template(one user message,
/// add_generation_prompt=True, tokenize=True), for every family fixture with its own template (auto).</summary>
[Trait("tier", "parity")]
public class ChatTemplatePromptTests
{
    public static TheoryData<string> Families => new() { "llama3", "mistral", "qwen2", "gemma", "gemma2" };

    [Theory, MemberData(nameof(Families))]
    public void User_message_with_generation_prompt_equals_transformers(string family)
    {
        string dir = Paths.Family(family);
        var reference = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "reference.json"))).RootElement
            .GetProperty("chat").GetProperty("single_turn").EnumerateArray()
            .Single(c => c.GetProperty("kind").GetString() == "prompt");
        var tokenizer = TextTokenizers.Load(dir);
        var prompt = ChatTemplatePrompt.For(TemplateKind.Auto, tokenizer, TokenizerConfigJson.Load(dir));
        string user = reference.GetProperty("messages")[0].GetProperty("content").GetString()!;
        Assert.Equal(reference.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()), prompt.Encode(user));
        Assert.NotEmpty(prompt.EndOfTurnIds);
    }

    [Fact]
    public void Llama3_stops_at_eot_id()
    {
        var tokenizer = TextTokenizers.Load(Paths.Family("llama3"));
        var prompt = ChatTemplatePrompt.For(TemplateKind.Auto, tokenizer, TokenizerConfigJson.Load(Paths.Family("llama3")));
        Assert.Equal("llama3", prompt.Name);
        Assert.Equal([tokenizer.TokenId("<|eot_id|>")!.Value], prompt.EndOfTurnIds);
    }
}
