using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// <c>data.template: none</c> for chat rows: the bare contents, each a fresh input, BOS before the first; user and
/// system masked, each assistant content trained and followed by EOS. A trailing user message is masked.
/// </summary>
public sealed class PlainChatTemplate : IChatTemplate
{
    public TemplateKind Kind => TemplateKind.None;
    public bool WholeText => false;
    public bool SupportsSystem => true;
    public IReadOnlyList<string> EndOfTurnTokens => [];

    public IReadOnlyList<Segment> Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        var segments = new List<Segment>();
        foreach (var m in messages)
        {
            if (m.Role == ChatMessage.System && string.IsNullOrWhiteSpace(m.Content)) continue;
            bool assistant = m.Role == ChatMessage.Assistant;
            segments.Add(new Segment(m.Content.Trim(), Trained: assistant, Eos: assistant));
        }
        if (segments.Count > 0) segments[0] = segments[0] with { Bos = true };
        return segments;
    }
}
