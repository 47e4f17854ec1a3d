using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// Gemma's chat format (google/gemma-*-it chat_template):
/// <code>{bos}&lt;start_of_turn&gt;user\n{content | trim}&lt;end_of_turn&gt;\n&lt;start_of_turn&gt;model\n{content | trim}&lt;end_of_turn&gt;\n</code>
/// (the assistant's role is written "model"), and <c>&lt;start_of_turn&gt;model\n</c> as the generation prompt. The
/// template has no system role: it raises "System role not supported", so a system message is refused here unless
/// data.system_role is fold (the caller then joins it to the first user turn). Trained: each model content and its
/// &lt;end_of_turn&gt; (where generation stops); the newline after it is masked.
/// </summary>
public sealed class GemmaChatTemplate(string bosToken) : IChatTemplate
{
    public const string EndOfTurn = "<end_of_turn>";

    public TemplateKind Kind => TemplateKind.Gemma;
    public bool WholeText => true;
    public bool SupportsSystem => false;
    public IReadOnlyList<string> EndOfTurnTokens => [EndOfTurn];

    public IReadOnlyList<Segment> Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        if (messages.Count > 0 && messages[0].Role == ChatMessage.System)
            throw new InvalidDataException("the gemma template has no system role (System role not supported); set data.system_role: fold to fold the system message into the first user turn");
        var segments = new List<Segment> { new(bosToken, Trained: false) };
        foreach (var m in messages)
        {
            bool assistant = m.Role == ChatMessage.Assistant;
            segments.Add(new Segment($"<start_of_turn>{(assistant ? "model" : m.Role)}\n", Trained: false));
            segments.Add(new Segment(TemplateText.Trim(m.Content) + EndOfTurn, Trained: assistant));
            segments.Add(new Segment("\n", Trained: false));
        }
        if (addGenerationPrompt) segments.Add(new Segment("<start_of_turn>model\n", Trained: false));
        return segments;
    }
}
