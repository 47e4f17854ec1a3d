namespace QLoraNet.Training.Data;

/// <summary>
/// One row of a data file before any template: <see cref="Origin"/> is "file:line" for error messages.
/// The four variants are the four <c>data.format</c>s.
/// </summary>
public abstract record RawExample(string Origin);

/// <summary>A conversation: an optional system prompt, then user/assistant turns (the assistant's are trained).</summary>
public sealed record ChatExample(string Origin, string? System, IReadOnlyList<ChatTurn> Turns) : RawExample(Origin);

public sealed record ChatTurn(string User, string Assistant);

/// <summary>An alpaca-style row: instruction, optional input (context), output (trained), optional system prompt.</summary>
public sealed record InstructionExample(string Origin, string Instruction, string Input, string Output, string? System)
    : RawExample(Origin);

/// <summary>Plain text, trained on every token.</summary>
public sealed record CompletionExample(string Origin, string Text) : RawExample(Origin);

/// <summary>
/// A preference pair (TRL's format): a conversation so far (<see cref="System"/>, earlier <see cref="Context"/> turns,
/// and the user's <see cref="Prompt"/>) with two answers to it, the <see cref="Chosen"/> one preferred over the
/// <see cref="Rejected"/> one. Each answer makes one conversation (<see cref="With"/>); where one rendering is wanted
/// (a sample prompt, a preview) the chosen conversation stands for the pair.
/// </summary>
public sealed record PreferenceExample(string Origin, string? System, IReadOnlyList<ChatTurn> Context, string Prompt, string Chosen, string Rejected)
    : RawExample(Origin)
{
    /// <summary>The conversation ending with <paramref name="answer"/> to the prompt.</summary>
    public ChatExample With(string answer) => new(Origin, System, [.. Context, new ChatTurn(Prompt, answer)]);
}
