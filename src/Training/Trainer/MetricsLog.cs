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
        if (keepThroughStep > 0 && File.Exists(path)) _rows.AddRange(Read(path).Where(r => r.Step <= keepThroughStep));
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

    public static IReadOnlyList<Row> Read(string path)
    {
        var rows = new List<Row>();
        using var reader = CsvReader.FromFile(path, new CsvReaderOptions { HasHeader = true });
        while (reader.Read())
        {
            double D(int i) => double.Parse(reader.GetString(i), CultureInfo.InvariantCulture);
            string val = reader.GetString(3);
            rows.Add(new Row((int)D(0), D(1), D(2), val.Length == 0 ? null : double.Parse(val, CultureInfo.InvariantCulture),
                D(4), D(5), (long)D(6), D(7), D(8), D(9), D(10)));
        }
        return rows;
    }
}
