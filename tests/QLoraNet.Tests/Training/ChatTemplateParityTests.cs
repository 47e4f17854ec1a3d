using System.Text.Json;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Tests.Models;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;

namespace QLoraNet.Tests.Training;

/// <summary>
/// Each family fixture's shipped chat template, recognised and rendered natively, against transformers 5.17's
/// apply_chat_template text and ids (reference.json chat: full conversations with and without the generation prompt,
/// and prompts), and the masks those conversations train with.
/// </summary>
[Trait("tier", "parity")]
public class ChatTemplateParityTests
{
    public static TheoryData<string, TemplateKind> Families => new()
    {
        { "llama3", TemplateKind.Llama3 }, { "bitnet", TemplateKind.Llama3 }, { "qwen2", TemplateKind.Chatml },
        { "mistral", TemplateKind.MistralInstruct }, { "gemma", TemplateKind.Gemma }, { "gemma2", TemplateKind.Gemma },
    };

    internal static (ITextTokenizer Tok, IChatTemplate Template) Load(string family, TemplateKind kind = TemplateKind.Auto)
    {
        string dir = Paths.Family(family);
        var tok = TextTokenizers.Load(dir);
        return (tok, ChatTemplates.Resolve(kind, tok, TokenizerConfigJson.Load(dir))!);
    }

    static List<ChatMessage> Messages(JsonElement e) =>
        e.GetProperty("messages").EnumerateArray().Select(m => new ChatMessage(m.GetProperty("role").GetString()!, m.GetProperty("content").GetString()!)).ToList();

    [Theory, MemberData(nameof(Families))]
    public void Shipped_template_is_recognised(string family, TemplateKind kind)
    {
        var (_, template) = Load(family);
        Assert.Equal(kind, template.Kind);
    }

    [Theory, MemberData(nameof(Families))]
    public void Rendered_text_and_ids_equal_apply_chat_template(string family, TemplateKind _)
    {
        var (tok, template) = Load(family);
        int compared = 0;
        foreach (var conversation in FamilyTokenizerParityTests.Reference(family).GetProperty("chat").EnumerateObject())
            foreach (var c in conversation.Value.EnumerateArray())
            {
                var messages = Messages(c);
                bool generation = c.GetProperty("add_generation_prompt").GetBoolean();
                if (c.TryGetProperty("error", out var error))
                {
                    var e = Assert.Throws<InvalidDataException>(() => template.Render(messages, generation));
                    Assert.Contains("System role not supported", e.Message);
                    Assert.Contains("data.system_role: fold", e.Message);
                    continue;
                }
                var segments = template.Render(messages, generation);
                Assert.Equal(c.GetProperty("text").GetString(), string.Concat(segments.Select(s => s.Text)));
                var (ids, _) = ExampleEncoder.Tokenize(tok, segments, template.WholeText);
                Assert.Equal(FamilyTokenizerParityTests.Ids(c.GetProperty("ids")), ids);
                compared++;
            }
        Assert.True(compared >= 9, $"{compared} chat references compared");
    }

    [Theory, MemberData(nameof(Families))]
    public void Only_assistant_contents_and_their_end_of_turn_token_are_trained(string family, TemplateKind _)
    {
        var (tok, template) = Load(family);
        var messages = new List<ChatMessage>
        {
            new("user", "How much is the Loft down jacket?"), new("assistant", "The Loft down jacket is $219.00."),
            new("user", "Is it warm?"), new("assistant", "Yes. It is rated to -10°C."),
        };
        var (ids, trained) = ExampleEncoder.Tokenize(tok, template.Render(messages, false), template.WholeText);
        var trainedIds = ids.Where((_, k) => trained[k]).ToList();
        string eot = template.EndOfTurnTokens[0];
        int eotId = tok.TokenId(eot)!.Value;
        // The trained tokens are exactly: answer 1, its end-of-turn token, answer 2, its end-of-turn token.
        Assert.Equal(2, trainedIds.Count(i => i == eotId));
        Assert.Equal("The Loft down jacket is $219.00.Yes. It is rated to -10°C.", tok.Decode(trainedIds.Where(i => i != eotId)).Replace(" Yes", "Yes").TrimStart());
        Assert.Equal(eotId, trainedIds[^1]);
        Assert.False(trained[0]);
        // What follows the last trained token (ChatML's and Gemma's newline) is masked.
        int last = trained.LastIndexOf(true);
        Assert.All(trained.Skip(last + 1), t => Assert.False(t));
        Assert.Equal(eotId, ids[last]);
    }
}
