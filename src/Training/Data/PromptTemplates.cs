using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// Renders a raw example into segments with the configured template:
/// completion rows are one trained segment (BOS text EOS) whatever the template; instruction rows under
/// llama2-chat/none become a one-turn chat whose user message is the instruction, then a blank line and the
/// input if there is one; chat rows under <c>none</c> are the bare contents, user masked, assistant trained and
/// followed by EOS. The row's system prompt wins over <c>data.system_prompt</c>.
/// </summary>
public static class PromptTemplates
{
    public static IReadOnlyList<Segment> Render(RawExample example, TemplateKind template, string? defaultSystem) =>
        (example, template) switch
        {
            (CompletionExample c, _) => [new Segment(c.Text, Trained: true, Bos: true, Eos: true)],
            (InstructionExample i, TemplateKind.Alpaca) => AlpacaTemplate.Render(i with { System = i.System ?? defaultSystem }),
            (InstructionExample i, _) => Render(AsChat(i), template, defaultSystem),
            (ChatExample c, TemplateKind.Llama2Chat) => Llama2ChatTemplate.Render(c.System ?? defaultSystem, c.Turns),
            (ChatExample c, TemplateKind.None) => Plain(c.System ?? defaultSystem, c.Turns),
            (ChatExample c, _) => throw new InvalidDataException(
                $"{c.Origin}: template '{YamlNames.Of(template)}' renders instruction rows only; use data.template llama2-chat or none for chat data"),
            _ => throw new ArgumentOutOfRangeException(nameof(example)),
        };

    static ChatExample AsChat(InstructionExample i)
    {
        string user = i.Input.Trim().Length > 0 ? $"{i.Instruction.Trim()}\n\n{i.Input.Trim()}" : i.Instruction;
        return new ChatExample(i.Origin, i.System, [new ChatTurn(user, i.Output)]);
    }

    static IReadOnlyList<Segment> Plain(string? system, IReadOnlyList<ChatTurn> turns)
    {
        var segments = new List<Segment>();
        if (!string.IsNullOrWhiteSpace(system)) segments.Add(new Segment(system.Trim(), Trained: false));
        foreach (var t in turns)
        {
            segments.Add(new Segment(t.User.Trim(), Trained: false));
            segments.Add(new Segment(t.Assistant.Trim(), Trained: true, Eos: true));
        }
        segments[0] = segments[0] with { Bos = true };
        return segments;
    }
}
