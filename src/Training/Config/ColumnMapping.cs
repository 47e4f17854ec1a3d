using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>
/// Which CSV column (or JSONL field) holds each part of a row, for files whose names differ from the defaults,
/// e.g. <c>columns: {instruction: question, output: answer}</c>. <see cref="Messages"/> is the chat format's list of
/// {role, content} (a JSON array in a CSV cell); <see cref="System"/> is an optional per-row system prompt.
/// <see cref="Prompt"/>, <see cref="Chosen"/> and <see cref="Rejected"/> are the preference format's (TRL's names).
/// </summary>
public sealed record ColumnMapping(
    string Instruction = "instruction",
    string Input = "input",
    string Output = "output",
    string Text = "text",
    string Messages = "messages",
    string System = "system",
    string Prompt = "prompt",
    string Chosen = "chosen",
    string Rejected = "rejected")
{
    internal static ColumnMapping Bind(ConfigSection s)
    {
        var d = new ColumnMapping();
        var m = new ColumnMapping(
            s.OptionalString("instruction") ?? d.Instruction,
            s.OptionalString("input") ?? d.Input,
            s.OptionalString("output") ?? d.Output,
            s.OptionalString("text") ?? d.Text,
            s.OptionalString("messages") ?? d.Messages,
            s.OptionalString("system") ?? d.System,
            s.OptionalString("prompt") ?? d.Prompt,
            s.OptionalString("chosen") ?? d.Chosen,
            s.OptionalString("rejected") ?? d.Rejected);
        s.Finish();
        return m;
    }

    internal YamlMappingNode ToYaml() => YamlOut.Map(
        ("instruction", YamlOut.Scalar(Instruction)), ("input", YamlOut.Scalar(Input)),
        ("output", YamlOut.Scalar(Output)), ("text", YamlOut.Scalar(Text)),
        ("messages", YamlOut.Scalar(Messages)), ("system", YamlOut.Scalar(System)),
        // The preference columns only when renamed, so that configs saved in checkpoints before they existed still
        // compare equal on --resume (an added key counts as a change there).
        ("prompt", Prompt != "prompt" ? YamlOut.Scalar(Prompt) : null),
        ("chosen", Chosen != "chosen" ? YamlOut.Scalar(Chosen) : null),
        ("rejected", Rejected != "rejected" ? YamlOut.Scalar(Rejected) : null));
}
