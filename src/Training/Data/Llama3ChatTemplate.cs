using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// Meta Llama 3's chat format (Meta-Llama-3-8B-Instruct's chat_template):
/// <code>{bos}&lt;|start_header_id|&gt;{role}&lt;|end_header_id|&gt;\n\n{content | trim}&lt;|eot_id|&gt;</code>
/// per message, BOS before the first, and <c>&lt;|start_header_id|&gt;assistant&lt;|end_header_id|&gt;\n\n</c> as the
/// generation prompt. Trained: each assistant content and its &lt;|eot_id|&gt;, which is what the model generates
/// after the header and where generation stops; headers and other messages are masked.
/// </summary>
public sealed class Llama3ChatTemplate(string bosToken) : IChatTemplate
{
    public const string EndOfTurn = "<|eot_id|>";

    public TemplateKind Kind => TemplateKind.Llama3;
    public bool WholeText => true;
    public bool SupportsSystem => true;
    public IReadOnlyList<string> EndOfTurnTokens => [EndOfTurn];

    public IReadOnlyList<Segment> Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        var segments = new List<Segment>();
        for (int i = 0; i < messages.Count; i++)
        {
            var m = messages[i];
            string header = (i == 0 ? bosToken : "") + Header(m.Role);
            bool assistant = m.Role == ChatMessage.Assistant;
            segments.Add(new Segment(header, Trained: false));
            segments.Add(new Segment(TemplateText.Trim(m.Content) + EndOfTurn, Trained: assistant));
        }
        if (addGenerationPrompt) segments.Add(new Segment(Header(ChatMessage.Assistant), Trained: false));
        return segments;
    }

    static string Header(string role) => $"<|start_header_id|>{role}<|end_header_id|>\n\n";
}
