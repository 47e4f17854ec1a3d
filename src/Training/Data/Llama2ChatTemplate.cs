using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// Meta's Llama-2 chat format (llama/generation.py <c>chat_completion</c>; the same as Hugging Face's llama-2 chat
/// template). As one string, with &lt;s&gt;/&lt;/s&gt; standing for the BOS/EOS ids:
/// <code>&lt;s&gt;[INST] &lt;&lt;SYS&gt;&gt;\n{system}\n&lt;&lt;/SYS&gt;&gt;\n\n{user} [/INST] {assistant} &lt;/s&gt;&lt;s&gt;[INST] {user2} [/INST] {assistant2} &lt;/s&gt;</code>
/// Contents are stripped; the system block goes inside the first [INST] only. Meta encodes each turn
/// <c>"[INST] {user} [/INST] {assistant} "</c> as one SentencePiece input; here the turn is cut after
/// <c>[/INST]</c> into a masked prompt and a trained response. Because SentencePiece never merges across a
/// space (pieces start with "▁"), encoding the response <c>"{assistant} "</c> on its own, with its dummy-prefix
/// space, gives exactly the ids of Meta's whole-turn encoding, trailing "▁" (29871) included.
/// A checkpoint's Hugging Face llama-2 chat_template is recognised as this format and rendered Meta's way (each turn
/// encoded on its own), not as apply_chat_template's one-string encoding. A trailing user message (a prompt to
/// continue) is its masked [INST] segment.
/// </summary>
public sealed class Llama2ChatTemplate : IChatTemplate
{
    public TemplateKind Kind => TemplateKind.Llama2Chat;
    public bool WholeText => false;
    public bool SupportsSystem => true;
    public IReadOnlyList<string> EndOfTurnTokens => [];

    public IReadOnlyList<Segment> Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        string? system = messages.Count > 0 && messages[0].Role == ChatMessage.System ? messages[0].Content : null;
        var rest = messages.Skip(system != null ? 1 : 0).ToList();
        var turns = new List<ChatTurn>();
        for (int i = 0; i + 1 < rest.Count; i += 2) turns.Add(new ChatTurn(rest[i].Content, rest[i + 1].Content));
        var segments = Render(system, turns).ToList();
        if (rest.Count % 2 == 1)
        {
            string user = rest[^1].Content.Trim();
            if (turns.Count == 0 && !string.IsNullOrWhiteSpace(system)) user = $"<<SYS>>\n{system.Trim()}\n<</SYS>>\n\n{user}";
            segments.Add(new Segment($"[INST] {user} [/INST]", Trained: false, Bos: true));
        }
        return segments;
    }

    public static IReadOnlyList<Segment> Render(string? system, IReadOnlyList<ChatTurn> turns)
    {
        var segments = new List<Segment>(2 * turns.Count);
        for (int i = 0; i < turns.Count; i++)
        {
            string user = turns[i].User.Trim();
            if (i == 0 && !string.IsNullOrWhiteSpace(system)) user = $"<<SYS>>\n{system.Trim()}\n<</SYS>>\n\n{user}";
            segments.Add(new Segment($"[INST] {user} [/INST]", Trained: false, Bos: true));
            segments.Add(new Segment($"{turns[i].Assistant.Trim()} ", Trained: true, Eos: true));
        }
        return segments;
    }

    /// <summary>The single string of the format, for display and tests (BOS/EOS written as &lt;s&gt;/&lt;/s&gt;).</summary>
    public static string ToText(IReadOnlyList<Segment> segments) =>
        string.Concat(segments.Select((s, i) =>
            (s.Bos ? "<s>" : "") + (i > 0 && !s.Bos ? " " : "") + s.Text + (s.Eos ? "</s>" : "")));
}
