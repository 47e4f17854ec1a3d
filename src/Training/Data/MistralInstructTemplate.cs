using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// Mistral-7B-Instruct's format (the v0.1/v0.2 chat_template revision that writes " [INST] "):
/// <code>{bos} [INST] {system}\n\n{user} [/INST] {assistant}{eos} [INST] {user} [/INST] {assistant}{eos}</code>
/// A system message is folded into the first user turn by the template itself; contents are not trimmed; the
/// generation prompt adds nothing (a prompt already ends with [/INST]). Trained: " {assistant}" and its EOS; the
/// space belongs to the answer because SentencePiece spells it as the "▁" of the answer's first token.
/// </summary>
public sealed class MistralInstructTemplate(string bosToken, string eosToken) : IChatTemplate
{
    public TemplateKind Kind => TemplateKind.MistralInstruct;
    public bool WholeText => true;
    public bool SupportsSystem => true;
    public IReadOnlyList<string> EndOfTurnTokens => [eosToken];

    public IReadOnlyList<Segment> Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        string? system = messages.Count > 0 && messages[0].Role == ChatMessage.System ? messages[0].Content : null;
        var segments = new List<Segment> { new(bosToken, Trained: false) };
        bool first = true;
        foreach (var m in messages.Skip(system != null ? 1 : 0))
        {
            if (m.Role == ChatMessage.Assistant)
            {
                segments.Add(new Segment($" {m.Content}{eosToken}", Trained: true));
                continue;
            }
            string content = first && system != null ? $"{system}\n\n{m.Content}" : m.Content;
            segments.Add(new Segment($" [INST] {content} [/INST]", Trained: false));
            first = false;
        }
        return segments;
    }
}
