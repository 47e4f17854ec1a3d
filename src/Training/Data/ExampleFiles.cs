using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// Reads the examples of data files (.jsonl or .csv by extension). A bad row fails the whole read with its
/// file:line, unless <c>skipBadRows</c>, which skips and counts it (the first reason is kept for the report).
/// </summary>
public static class ExampleFiles
{
    public sealed record Result(IReadOnlyList<RawExample> Examples, int SkippedRows, string? FirstSkipReason);

    public static Result Read(IEnumerable<string> paths, DataFormat format, ColumnMapping columns, bool skipBadRows)
    {
        var examples = new List<RawExample>();
        int skipped = 0;
        string? firstReason = null;
        foreach (var path in paths)
        {
            if (!File.Exists(path)) throw new FileNotFoundException($"data file '{path}' not found", path);
            var rows = Path.GetExtension(path).ToLowerInvariant() switch
            {
                ".jsonl" => JsonlRows.Read(path),
                ".csv" => CsvRows.Read(path, RequiredColumns(format, columns)),
                var ext => throw new InvalidDataException($"data file '{path}': unsupported extension {QLoraNet.Formats.SafeText.Quote(ext, 20)}; use .jsonl or .csv"),
            };
            foreach (var row in rows)
            {
                try
                {
                    examples.Add(RowParser.Parse(row(), format, columns));
                }
                catch (BadRowException e)
                {
                    if (!skipBadRows) throw new InvalidDataException($"{e.Message} (set data.skip_bad_rows: true to skip and count such rows)");
                    skipped++;
                    firstReason ??= e.Message;
                }
            }
        }
        return new Result(examples, skipped, firstReason);
    }

    static IReadOnlyList<string> RequiredColumns(DataFormat format, ColumnMapping c) => format switch
    {
        DataFormat.Completion => [c.Text],
        DataFormat.Instruction => [c.Instruction, c.Output],
        DataFormat.Preference => [c.Prompt, c.Chosen, c.Rejected],
        _ => [c.Messages],
    };
}
