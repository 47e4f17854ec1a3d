using QLoraNet.Evaluation;
using QLoraNet.Evaluation.Scoring;

namespace QLoraNet.Tests.Evaluation;

/// <summary>
/// --apply-chat-template: a generative task's whole context becomes the user message of the chat prompt, generation
/// stops also at the template's end-of-turn ids, and multiple-choice tasks are scored on the raw text as before.
/// </summary>
[Trait("tier", "unit")]
public class ChatPromptTests
{
    /// <summary>A chat format readable through the mock's character tokenizer: "&lt;u&gt;message&lt;/u&gt;&lt;a&gt;".</summary>
    sealed class TagChat(MockScoringModel model) : IChatPrompt
    {
        public string Name => "tags";
        public IReadOnlyList<int> Encode(string userMessage) => [MockScoringModel.Bos, .. model.EncodeWithoutSpecialTokens($"<u>{userMessage}</u><a>")];
        public IReadOnlyList<int> EndOfTurnIds => [99];
    }

    [Fact]
    public void Generative_prompt_is_the_user_message_and_stops_at_end_of_turn()
    {
        var model = new MockScoringModel(generate: _ => " 3 + 4 = 7.\n#### 7");
        var r = EvalFixtures.Run(model, "gsm8k", "gsm8k", new EvalOptions(NumFewshot: 0, Chat: new TagChat(model)));
        Assert.Equal("<u>Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer:</u><a>", Assert.Single(model.Prompts));
        Assert.Equal([99], Assert.Single(model.StopIds));
        Assert.Equal(1.0, r.Tasks[0].Metrics["exact_match,strict-match"].Value);

        var raw = new MockScoringModel(generate: _ => "#### 7");
        EvalFixtures.Run(raw, "gsm8k", "gsm8k", new EvalOptions(NumFewshot: 0));
        Assert.Empty(Assert.Single(raw.StopIds));
    }

    [Fact]
    public void Multiple_choice_requests_do_not_change()
    {
        var plain = new MockScoringModel();
        var chat = new MockScoringModel();
        EvalFixtures.Run(plain, "arc_easy", "arc");
        EvalFixtures.Run(chat, "arc_easy", "arc", new EvalOptions(Chat: new TagChat(chat)));
        Assert.NotEmpty(plain.Requests);
        Assert.Equal(plain.Requests, chat.Requests);
    }
}
