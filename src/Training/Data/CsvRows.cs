using System.Text;
using System.Text.Json;
using CsvHelper;
using QLoraNet.Formats;

namespace QLoraNet.Training.Data;

/// <summary>
/// The records of a CSV file with a header row (RFC 4180 quoting; cells may span lines). The columns a format
/// needs are checked against the header first: a missing one fails for the whole file, naming the columns found.
/// A chat file keeps its messages as a JSON array in one cell.
/// </summary>
public static class CsvRows
{
    /// <summary>The largest record (UTF-8 bytes): an unclosed quote or binary data fails here instead of filling memory.</summary>
    public const int MaxRecordBytes = 16 << 20;

    public static IEnumerable<Func<RowParser.Row>> Read(string path, IReadOnlyList<string> requiredColumns)
    {
        var rows = new List<Func<RowParser.Row>>();
        try
        {
            UserFile.RequireRegular(path, "CSV data file");
            using var reader = CsvReader.FromFile(path, new CsvReaderOptions { HasHeader = true, TrackLineNumbers = true, MaxRecordSize = MaxRecordBytes });
            string[] header = reader.Headers.ToArray();
            var missing = requiredColumns.Where(c => !header.Contains(c)).ToArray();
            if (missing.Length > 0)
                throw new InvalidDataException($"{path}: missing column(s) {string.Join(", ", missing)}; the header has: "
                    + $"{string.Join(", ", header.Take(20).Select(h => SafeText.Clip(h, 40)))}{(header.Length > 20 ? $", ... ({header.Length} columns)" : "")} (map names with data.columns)");
            while (reader.Read())
            {
                var cells = new Dictionary<string, string>();
                for (int i = 0; i < header.Length && i < reader.FieldCount; i++) cells[header[i]] = reader.GetString(i);
                var row = new CsvRow($"{path}:{reader.LineNumber}", header, cells);
                rows.Add(() => row);
            }
        }
        catch (CsvFormatException e)
        {
            // The whole file is suspect after a quoting error, so it is not a skippable bad row.
            throw new InvalidDataException($"{path}{(e.LineNumber > 0 ? $":{e.LineNumber}" : "")}: malformed CSV ({SafeText.Clip(e.Message.Split('\n')[0], 160)})");
        }
        catch (DecoderFallbackException)
        {
            throw new InvalidDataException($"{path}: not valid UTF-8 text");
        }
        return rows;
    }

    sealed class CsvRow(string origin, IReadOnlyList<string> header, Dictionary<string, string> cells) : RowParser.Row
    {
        public string Origin => origin;
        public IReadOnlyList<string> FieldNames => header;
        public string? String(string name) => cells.GetValueOrDefault(name);

        public JsonElement? Json(string name)
        {
            if (cells.GetValueOrDefault(name) is not { Length: > 0 } text) return null;
            try
            {
                return JsonDocument.Parse(text, UserFile.JsonOptions).RootElement;
            }
            catch (JsonException e)
            {
                throw new BadRowException($"{origin}: column {SafeText.Quote(name, 40)} is not valid JSON ({SafeText.Clip(e.Message.Split(". ")[0], 120)})");
            }
        }
    }
}
