using System.Globalization;
using CsvHelper;
using QLoraNet.Formats;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// <c>metrics.csv</c>: one row per optimizer step (validation loss on the steps that evaluated), appended as the
/// run goes so a crash loses nothing. On resume, rows past the checkpoint's step are dropped first, so the file
/// reads as one uninterrupted run. The rows also feed the loss curve. <c>host_rss_mb</c> is the process's resident
/// set on the host (not device memory).
/// </summary>
public sealed class MetricsLog
{
    public sealed record Row(int Step, double Epoch, double Loss, double? ValidationLoss, double LearningRate,
        double GradNorm, long Tokens, double TokensPerSecond, double StepSeconds, double ElapsedSeconds, double HostRssMb);

    static readonly string[] Header =
        ["step", "epoch", "loss", "val_loss", "learning_rate", "grad_norm", "tokens", "tokens_per_s", "step_s", "elapsed_s", "host_rss_mb"];

    readonly List<Row> _rows = new();

    /// <summary>The file, or null for a log kept in memory only (a data-parallel replica that writes no files).</summary>
    public string? Path { get; }
    public IReadOnlyList<Row> Rows => _rows;

    /// <summary>Opens the log, keeping rows up to <paramref name="keepThroughStep"/> from an earlier run (0: start afresh).</summary>
    public MetricsLog(string? path, int keepThroughStep)
    {
        Path = path;
        if (path is null) return;
        if (keepThroughStep > 0 && File.Exists(path)) _rows.AddRange(Read(path, keepThroughStep));
        Rewrite();
    }

    public void Append(Row row)
    {
        _rows.Add(row);
        if (Path is null) return;
        using var w = new StreamWriter(Path, append: true);
        WriteRow(w, row);
    }

    /// <summary>Sets the validation loss of the last row (evaluation runs after the step's row was written).</summary>
    public void SetValidationLoss(int step, double loss)
    {
        int i = _rows.FindLastIndex(r => r.Step == step);
        if (i < 0) return;
        _rows[i] = _rows[i] with { ValidationLoss = loss };
        if (Path is not null) Rewrite();
    }

    void Rewrite() => AtomicFile.Write(Path!, stream =>
    {
        using var w = new StreamWriter(stream, leaveOpen: true);
        using (var csv = CsvWriter.Create(w, null, leaveOpen: true))
        {
            foreach (var h in Header) csv.WriteField(h);
            csv.EndRecord();
            csv.Flush();
        }
        foreach (var r in _rows) WriteRow(w, r);
    });

    static void WriteRow(TextWriter w, Row r)
    {
        using var csv = CsvWriter.Create(w, null, leaveOpen: true);
        foreach (var f in new[]
                 {
                     S(r.Step), S(r.Epoch), S(r.Loss), r.ValidationLoss is { } v ? S(v) : "", S(r.LearningRate), S(r.GradNorm),
                     S(r.Tokens), S(r.TokensPerSecond), S(r.StepSeconds), S(r.ElapsedSeconds), S(r.HostRssMb),
                 })
            csv.WriteField(f);
        csv.EndRecord();
        csv.Flush();
    }

    static string S(double x) => x.ToString("G9", CultureInfo.InvariantCulture);
    static string S(long x) => x.ToString(CultureInfo.InvariantCulture);

    /// <summary>A metrics file larger than this is not one this trainer wrote (a row is ~120 bytes: 2 million steps).</summary>
    public const long MaxBytes = 256L << 20;

    /// <summary>No row of ours comes near this; a longer line is binary data or records without newlines.</summary>
    const int MaxLineBytes = 4096;

    /// <summary>Older runs wrote the resident-memory column as memory_mb.</summary>
    static readonly Dictionary<string, string> OlderNames = new() { ["memory_mb"] = "host_rss_mb" };

    /// <summary>
    /// Reads a metrics file (rows up to <paramref name="throughStep"/>, if given), bounded and validated as every
    /// reader of a file from disk is: a regular file of at most <see cref="MaxBytes"/>, lines of at most 4 KiB, a header
    /// naming the columns, every field a finite number (val_loss may be empty), steps positive and increasing. A row cut
    /// off by a kill during an append (the file's last line, without its newline) is dropped; anything else wrong is a
    /// one-line error naming the file, the line and the column.
    /// </summary>
    public static IReadOnlyList<Row> Read(string path, int? throughStep = null)
    {
        UserFile.RequireRegular(path, "metrics file");
        long length = new FileInfo(path).Length;
        if (length > MaxBytes) throw new InvalidDataException($"{path}: {length} bytes is more than the {MaxBytes}-byte limit for a metrics file; move it aside to resume");
        bool endsWithNewline = length == 0 || EndsWithNewline(path);
        var rows = new List<Row>();
        int[]? columns = null;
        (int Line, string Text)? pending = null;
        foreach (var line in UserFile.ReadLines(path, MaxLineBytes, "metrics file"))
        {
            if (pending is { } p) Parse(p);
            pending = line;
        }
        if (pending is { } last && (endsWithNewline || columns is null)) Parse(last);
        return rows;

        void Parse((int Line, string Text) line)
        {
            string where = $"{path}:{line.Line}";
            var fields = line.Text.Split(',');
            if (columns is null)
            {
                columns = Header.Select(name => Array.FindIndex(fields, f => (OlderNames.GetValueOrDefault(f.Trim()) ?? f.Trim()) == name)).ToArray();
                int missing = Array.IndexOf(columns, -1);
                if (missing >= 0)
                    throw new InvalidDataException($"{where}: header has no '{Header[missing]}' column (got {SafeText.Clip(line.Text, 120)}); not a metrics file of this trainer");
                return;
            }
            if (line.Text.Length == 0) return;
            if (fields.Length < columns.Max() + 1)
                throw new InvalidDataException($"{where}: {fields.Length} fields, the header names {columns.Max() + 1}; fix or delete the file to resume");
            double D(int column, bool optional = false)
            {
                string text = fields[columns[column]].Trim();
                if (optional && text.Length == 0) return double.NaN;
                return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v) ? v
                    : throw new InvalidDataException($"{where}: '{Header[column]}' is {SafeText.Quote(text, 40)}, not a finite number; fix or delete the file to resume");
            }
            double step = D(0);
            if (step != Math.Floor(step) || step < 1 || step > int.MaxValue || (rows.Count > 0 && step <= rows[^1].Step))
                throw new InvalidDataException($"{where}: step {step} does not follow step {(rows.Count > 0 ? rows[^1].Step : 0)}; fix or delete the file to resume");
            if (throughStep is { } limit && step > limit) return;
            double val = D(3, optional: true);
            rows.Add(new Row((int)step, D(1), D(2), double.IsNaN(val) ? null : val, D(4), D(5), (long)D(6), D(7), D(8), D(9), D(10)));
        }
    }

    static bool EndsWithNewline(string path)
    {
        using var stream = UserFile.OpenRead(path, "metrics file", bufferSize: 1);
        stream.Seek(-1, SeekOrigin.End);
        return stream.ReadByte() is '\n' or '\r';
    }
}
