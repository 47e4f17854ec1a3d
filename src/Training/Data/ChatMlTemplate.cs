using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// ChatML as Qwen2/Qwen2.5 ship it (their chat_template without tools):
/// <code>&lt;|im_start|&gt;{role}\n{content}&lt;|im_end|&gt;\n</code>
/// per message, contents untrimmed, and <c>&lt;|im_start|&gt;assistant\n</c> as the generation prompt. Without a system
/// message the template writes its <see cref="DefaultSystem"/> first (Qwen2.5: "You are Qwen, created by Alibaba
/// Cloud. You are a helpful assistant."; plain ChatML templates have none). Trained: each assistant content and its
/// &lt;|im_end|&gt; (what the model generates; generation stops there, so the newline after it is never generated
/// and stays masked, as in axolotl's and TRL's assistant-only masks).
/// </summary>
public sealed class ChatMlTemplate(string? defaultSystem) : IChatTemplate
{
    public const string EndOfTurn = "<|im_end|>";

    public string? DefaultSystem => defaultSystem;
    public TemplateKind Kind => TemplateKind.Chatml;
    public bool WholeText => true;
    public bool SupportsSystem => true;
    public IReadOnlyList<string> EndOfTurnTokens => [EndOfTurn];

    public IReadOnlyList<Segment> Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        var segments = new List<Segment>();
        if (defaultSystem != null && (messages.Count == 0 || messages[0].Role != ChatMessage.System))
            segments.Add(new Segment($"<|im_start|>system\n{defaultSystem}{EndOfTurn}\n", Trained: false));
        foreach (var m in messages)
        {
            bool assistant = m.Role == ChatMessage.Assistant;
            segments.Add(new Segment($"<|im_start|>{m.Role}\n", Trained: false));
            segments.Add(new Segment(m.Content + EndOfTurn, Trained: assistant));
            segments.Add(new Segment("\n", Trained: false));
        }
        if (addGenerationPrompt) segments.Add(new Segment("<|im_start|>assistant\n", Trained: false));
        return segments;
    }
}
