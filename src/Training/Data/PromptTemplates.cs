using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// Renders a raw example into segments with the configured template:
/// completion rows are one trained segment (BOS text EOS) whatever the template; instruction rows under alpaca use
/// the Alpaca prompt, under a chat template become a one-turn chat whose user message is the instruction, then a
/// blank line and the input if there is one; chat rows go through the chat template (<see cref="IChatTemplate"/>);
/// a preference row renders as its chosen conversation (the data pipeline renders both of its conversations).
/// The row's system prompt wins over <c>data.system_prompt</c>; a blank one counts as none; data.system_role decides
/// whether it is kept or folded into the first user turn.
/// </summary>
public static class PromptTemplates
{
    /// <summary>An example's segments and how to tokenize them (<see cref="IChatTemplate.WholeText"/>).</summary>
    public sealed record Rendered(IReadOnlyList<Segment> Segments, bool WholeText);

    /// <summary>With a template that needs no tokenizer (llama2-chat, alpaca, none).</summary>
    public static IReadOnlyList<Segment> Render(RawExample example, TemplateKind template, string? defaultSystem) =>
        Render(example, template == TemplateKind.Alpaca ? null : ChatTemplates.Builtin(template), defaultSystem, SystemRole.Native).Segments;

    /// <summary>With a resolved chat template, null meaning alpaca (instruction rows only).</summary>
    public static Rendered Render(RawExample example, IChatTemplate? chat, string? defaultSystem, SystemRole systemRole) =>
        example switch
        {
            CompletionExample c => new([new Segment(c.Text, Trained: true, Bos: true, Eos: true)], WholeText: false),
            InstructionExample i when chat == null => new(AlpacaTemplate.Render(i with { System = i.System ?? defaultSystem }), WholeText: false),
            InstructionExample i => Render(AsChat(i), chat, defaultSystem, systemRole),
            PreferenceExample p => Render(p.With(p.Chosen), chat, defaultSystem, systemRole),
            ChatExample c when chat == null => throw new InvalidDataException(
                $"{c.Origin}: template 'alpaca' renders instruction rows only; use one of {string.Join(", ", ChatTemplates.ChatKinds.Select(k => YamlNames.Of(k)))} or auto for chat data"),
            ChatExample c => new(chat.Render(ChatTemplates.ApplySystemRole(
                ChatMessage.Of(NonBlank(c.System) ?? NonBlank(defaultSystem), c.Turns), chat, systemRole, c.Origin), addGenerationPrompt: false), chat.WholeText),
            _ => throw new ArgumentOutOfRangeException(nameof(example)),
        };

    static ChatExample AsChat(InstructionExample i)
    {
        string user = i.Input.Trim().Length > 0 ? $"{i.Instruction.Trim()}\n\n{i.Input.Trim()}" : i.Instruction;
        return new ChatExample(i.Origin, i.System, [new ChatTurn(user, i.Output)]);
    }

    static string? NonBlank(string? s) => string.IsNullOrWhiteSpace(s) ? null : s;
}
