using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>
/// Which CSV column (or JSONL field) holds each part of a row, for files whose names differ from the defaults,
/// e.g. <c>columns: {instruction: question, output: answer}</c>. <see cref="Messages"/> is the chat format's list of
/// {role, content} (a JSON array in a CSV cell); <see cref="System"/> is an optional per-row system prompt.
/// </summary>
public sealed record ColumnMapping(
    string Instruction = "instruction",
    string Input = "input",
    string Output = "output",
    string Text = "text",
    string Messages = "messages",
    string System = "system")
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
            s.OptionalString("system") ?? d.System);
        s.Finish();
        return m;
    }

    internal YamlMappingNode ToYaml() => YamlOut.Map(
        ("instruction", YamlOut.Scalar(Instruction)), ("input", YamlOut.Scalar(Input)),
        ("output", YamlOut.Scalar(Output)), ("text", YamlOut.Scalar(Text)),
        ("messages", YamlOut.Scalar(Messages)), ("system", YamlOut.Scalar(System)));
}
