namespace QLoraNet.Training.Data;

/// <summary>
/// One row of a data file before any template: <see cref="Origin"/> is "file:line" for error messages.
/// The three variants are the three <c>data.format</c>s.
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
