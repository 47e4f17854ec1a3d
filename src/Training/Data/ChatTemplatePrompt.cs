using QLoraNet.Evaluation.Scoring;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// A chat template as the prompt format of generative evaluation tasks (<see cref="IChatPrompt"/>): the task's
/// context is the one user message, rendered with the assistant header after it and tokenized as training tokenizes a
/// conversation (<see cref="ExampleEncoder.Tokenize"/>: the template's own BOS and markers, nothing added), so the
/// model is asked the way it is trained and chatted with. Generation stops at the template's end-of-turn tokens.
/// </summary>
public sealed class ChatTemplatePrompt : IChatPrompt
{
    readonly IChatTemplate template;
    readonly ITextTokenizer tokenizer;

    public ChatTemplatePrompt(IChatTemplate template, ITextTokenizer tokenizer)
    {
        this.template = template;
        this.tokenizer = tokenizer;
        EndOfTurnIds = template.EndOfTurnTokens.Select(tokenizer.TokenId).OfType<int>().ToList();
    }

    /// <summary>The template <paramref name="kind"/> names (auto: the model's own, from its tokenizer files), or a
    /// one-line error for alpaca, which renders instruction rows only.</summary>
    public static ChatTemplatePrompt For(TemplateKind kind, ITextTokenizer tokenizer, TokenizerConfigJson config) =>
        new(ChatTemplates.Resolve(kind, tokenizer, config)
            ?? throw new ArgumentException("the alpaca template renders instruction rows only; choose a chat template"), tokenizer);

    public string Name => YamlNames.Of(template.Kind);

    public IReadOnlyList<int> EndOfTurnIds { get; }

    public IReadOnlyList<int> Encode(string userMessage) => ExampleEncoder.Tokenize(tokenizer,
        template.Render([new ChatMessage(ChatMessage.User, userMessage)], addGenerationPrompt: true), template.WholeText).Ids;
}
