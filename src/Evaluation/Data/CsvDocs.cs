using System.Globalization;
using CsvHelper;
using QLoraNet.Formats;

namespace QLoraNet.Evaluation.Data;

/// <summary>CSV with a header row. Cells are text, except that a column whose non-empty cells are all integers (or all
/// numbers) holds numbers, as the hub's CSV loader (pandas) infers; an empty cell in such a column is null.</summary>
internal static class CsvDocs
{
    /// <summary>The largest record (UTF-8 bytes): an unclosed quote or binary data fails here instead of filling memory.</summary>
    const int MaxRecordBytes = 16 << 20;

    public static List<Doc> Read(string path)
    {
        var rows = new List<(string[] Cells, int Line)>();
        string[] header;
        try
        {
            // Bounded as the training data is (issue 11): a regular file, no record past MaxRecordBytes.
            UserFile.RequireRegular(path, "task data file");
            using var reader = CsvReader.FromFile(path, new CsvReaderOptions { HasHeader = true, TrackLineNumbers = true, MaxRecordSize = MaxRecordBytes });
            header = reader.Headers.ToArray();
            while (reader.Read())
            {
                if (reader.FieldCount != header.Length)
                    throw new TaskException($"{path}:{reader.LineNumber}: has {reader.FieldCount} cells, the header has {header.Length}");
                rows.Add((Enumerable.Range(0, header.Length).Select(reader.GetString).ToArray(), (int)reader.LineNumber));
            }
        }
        catch (Exception e) when (e is not TaskException)
        {
            throw new TaskException($"{path}: not a readable CSV file ({e.Message.Split('\n')[0]})");
        }
        var kinds = Enumerable.Range(0, header.Length).Select(c => ColumnKind(rows.Select(r => r.Cells[c]))).ToArray();
        return rows.Select(r => new Doc(
            header.Select((h, c) => new KeyValuePair<string, object?>(h, Convert(r.Cells[c], kinds[c]))).ToDictionary(),
            $"{path}:{r.Line}")).ToList();
    }

    enum Kind { Text, Integer, Number }

    static Kind ColumnKind(IEnumerable<string> cells)
    {
        var present = cells.Where(c => c.Length > 0).ToList();
        if (present.Count == 0) return Kind.Text;
        if (present.All(c => long.TryParse(c, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _))) return Kind.Integer;
        if (present.All(c => double.TryParse(c, NumberStyles.Float, CultureInfo.InvariantCulture, out _))) return Kind.Number;
        return Kind.Text;
    }

    static object? Convert(string cell, Kind kind) => kind switch
    {
        Kind.Integer => cell.Length == 0 ? null : long.Parse(cell, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture),
        Kind.Number => cell.Length == 0 ? null : double.Parse(cell, NumberStyles.Float, CultureInfo.InvariantCulture),
        _ => cell,
    };
}
