using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>
/// The training data: files (.jsonl or .csv, relative to the current directory), their format and prompt
/// template, and the policies of the data pipeline (see Training/Data: masking, truncation, packing).
/// Validation comes from <see cref="Validation"/> (a file) or from <see cref="ValFraction"/> of the shuffled
/// training examples, or not at all (both unset). <see cref="SystemPrompt"/> is used for rows that carry none;
/// <see cref="SystemRole"/> says whether a system message is kept or folded into the first user turn.
/// </summary>
public sealed record DataConfig(
    IReadOnlyList<string> Train,
    string? Validation,
    double ValFraction,
    DataFormat Format,
    TemplateKind Template,
    string? SystemPrompt,
    int MaxSeqLen,
    bool Packing,
    bool TrainOnInputs,
    bool SkipBadRows,
    ColumnMapping Columns)
{
    public static readonly IReadOnlyList<string> Extensions = [".jsonl", ".csv"];

    public SystemRole SystemRole { get; init; } = SystemRole.Native;

    internal static DataConfig Bind(ConfigSection s)
    {
        var train = s.RequiredStringList("train");
        var validation = s.OptionalString("validation");
        var valFraction = s.Double("val_fraction", 0, 0, 1);
        var format = s.Enum("format", DataFormat.Chat);
        var template = s.Enum("template", TemplateKind.Auto);
        var systemPrompt = s.OptionalString("system_prompt");
        var systemRole = s.Enum("system_role", SystemRole.Native);
        var maxSeqLen = s.Int("max_seq_len", 512, 8, 1 << 20);
        var packing = s.Bool("packing", false);
        var trainOnInputs = s.Bool("train_on_inputs", false);
        var skipBadRows = s.Bool("skip_bad_rows", false);
        var columns = ColumnMapping.Bind(s.Section("columns"));
        s.Finish();

        if (train is { Count: 0 }) throw s.ErrorAt("train", $"'{s.Full("train")}' is empty; give one or more .jsonl/.csv files");
        foreach (var f in train ?? []) CheckFile(s, "train", f);
        if (validation != null) CheckFile(s, "validation", validation);
        if (validation != null && valFraction > 0)
            throw s.ErrorAt("val_fraction", $"set '{s.Full("validation")}' or '{s.Full("val_fraction")}', not both");
        if (valFraction >= 1) throw s.ErrorAt("val_fraction", $"'{s.Full("val_fraction")}' must be in [0, 1); got {valFraction}");
        return new DataConfig(train ?? [], validation, valFraction, format, template, systemPrompt, maxSeqLen, packing,
            trainOnInputs, skipBadRows, columns) { SystemRole = systemRole };
    }

    static void CheckFile(ConfigSection s, string key, string file)
    {
        if (!Extensions.Contains(Path.GetExtension(file).ToLowerInvariant()))
            throw s.ErrorAt(key, $"'{s.Full(key)}' file {QLoraNet.Formats.SafeText.Quote(file, 200)} has an unsupported extension; use {string.Join(" or ", Extensions)}");
        if (!File.Exists(file))
            throw s.ErrorAt(key, $"'{s.Full(key)}' file {QLoraNet.Formats.SafeText.Quote(file, 200)} not found (relative paths resolve from the current directory {Environment.CurrentDirectory})");
    }

    internal YamlMappingNode ToYaml() => YamlOut.Map(
        ("train", YamlOut.List(Train)), ("validation", YamlOut.Scalar(Validation)),
        ("val_fraction", YamlOut.Scalar(ValFraction)), ("format", YamlOut.Scalar(Format)),
        ("template", YamlOut.Scalar(Template)), ("system_prompt", YamlOut.Scalar(SystemPrompt)),
        ("system_role", YamlOut.Scalar(SystemRole)),
        ("max_seq_len", YamlOut.Scalar(MaxSeqLen)), ("packing", YamlOut.Scalar(Packing)),
        ("train_on_inputs", YamlOut.Scalar(TrainOnInputs)), ("skip_bad_rows", YamlOut.Scalar(SkipBadRows)),
        ("columns", Columns.ToYaml()));
}
