namespace QLoraNet.Evaluation.Data;

/// <summary>
/// Reads task data files into rows. The format follows the extension: <c>.jsonl</c> / <c>.json</c> (JSON lines, or
/// one JSON array), <c>.csv</c> (header row; a column whose every cell is an integer becomes integers, as the hub's
/// CSV loader infers), <c>.parquet</c> (the hub's own format: nested lists and structs kept, e.g. ARC's
/// <c>choices: {text: [...], label: [...]}</c>). Anything else is refused by name.
/// </summary>
public static class DocFiles
{
    public static readonly string[] Extensions = [".jsonl", ".json", ".csv", ".parquet"];

    public static List<Doc> Read(string path)
    {
        if (!File.Exists(path)) throw new TaskException($"task data file '{path}' does not exist");
        string ext = Path.GetExtension(path).ToLowerInvariant();
        return ext switch
        {
            ".jsonl" or ".json" => JsonDocs.Read(path),
            ".csv" => CsvDocs.Read(path),
            ".parquet" => ParquetDocs.Read(path),
            _ => throw new TaskException($"{path}: cannot read '{ext}' files; task data must be {string.Join(", ", Extensions)}"),
        };
    }
}
