using System.Globalization;
using CsvHelper;
using QLoraNet.Formats;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// <c>metrics.csv</c>: one row per optimizer step (validation loss on the steps that evaluated), appended as the
/// run goes so a crash loses nothing, plus a row for step 0 when the base model is evaluated before training (its
/// training columns empty). On resume, rows past the checkpoint's step are dropped first, so the file reads as one
/// uninterrupted run. The rows also feed the loss curve and TensorBoard.
/// Memory columns say what they measure (<see cref="MemorySample"/>): <c>host_rss_mb</c> the process's resident set
/// on the host after the step, <c>host_peak_rss_mb</c> the process's peak resident set so far; on CUDA, since the
/// previous row, <c>device_allocated_peak_mb</c> and <c>device_reserved_peak_mb</c> the caching allocator's peaks
/// (bytes in tensors; bytes held from the driver), and <c>device_used_peak_mb</c> the peak of the device's used memory
/// (device-wide, see <see cref="MemoryMonitor"/>); device columns are empty on CPU, the allocator's also where its
/// counters cannot be read. <c>trained_tokens</c> are the step's loss terms, the denominator of its mean.
/// Benchmark task scores (<c>eval:</c> section) are extra columns after the fixed ones, named "task/metric", filled on
/// the rows of the steps that scored them.
/// </summary>
public sealed class MetricsLog
{
    /// <summary>One row; NaN (a double) or null (device memory) is an empty cell.</summary>
    public sealed record Row(int Step, double Epoch, double Loss, double? ValidationLoss, double LearningRate,
        double GradNorm, long Tokens, double TokensPerSecond, double StepSeconds, double ElapsedSeconds, double HostRssMb,
        double HostPeakRssMb = double.NaN, double? DeviceUsedPeakMb = null, double? DeviceAllocatedPeakMb = null,
        double? DeviceReservedPeakMb = null, long TrainedTokens = 0, IReadOnlyDictionary<string, double>? TaskScores = null)
    {
        /// <summary>The step-0 row: the base model's validation loss before any step, no training figures.</summary>
        public static Row BeforeTraining(double validationLoss, MemorySample memory) =>
            new(0, 0, double.NaN, validationLoss, double.NaN, double.NaN, 0, double.NaN, double.NaN, 0,
                memory.HostRssMb, memory.HostPeakRssMb, memory.DeviceUsedPeakMb, memory.DeviceAllocatedPeakMb, memory.DeviceReservedPeakMb);

        /// <summary>True for a row of an optimizer step (false for the step-0 evaluation row).</summary>
        public bool IsStep => Step > 0;
    }

    public static readonly IReadOnlyList<string> Header =
    [
        "step", "epoch", "loss", "val_loss", "learning_rate", "grad_norm", "tokens", "tokens_per_s", "step_s", "elapsed_s",
        "host_rss_mb", "host_peak_rss_mb", "device_used_peak_mb", "device_allocated_peak_mb", "device_reserved_peak_mb", "trained_tokens",
    ];

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
        if (row.TaskScores is { Count: > 0 }) { Rewrite(); return; }
        using var w = new StreamWriter(Path, append: true);
        WriteRow(w, row, TaskColumns());
    }

    /// <summary>Sets the benchmark task scores of a step's row (step 0: the base model's row, when validation wrote
    /// one; without it the scores before training go to the run's summary only).</summary>
    public void SetTaskScores(int step, IReadOnlyDictionary<string, double> scores)
    {
        if (scores.Count == 0) return;
        int i = _rows.FindLastIndex(r => r.Step == step);
        if (i < 0) return;
        _rows[i] = _rows[i] with { TaskScores = scores };
        if (Path is not null) Rewrite();
    }

    List<string> TaskColumns() => _rows.SelectMany(r => r.TaskScores?.Keys ?? []).Distinct().ToList();

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
        var tasks = TaskColumns();
        using (var csv = CsvWriter.Create(w, null, leaveOpen: true))
        {
            foreach (var h in Header.Concat(tasks)) csv.WriteField(h);
            csv.EndRecord();
            csv.Flush();
        }
        foreach (var r in _rows) WriteRow(w, r, tasks);
    });

    static void WriteRow(TextWriter w, Row r, IReadOnlyList<string> taskColumns)
    {
        using var csv = CsvWriter.Create(w, null, leaveOpen: true);
        foreach (var f in new[]
                 {
                     S(r.Step), S(r.Epoch), S(r.Loss), r.ValidationLoss is { } v ? S(v) : "", S(r.LearningRate), S(r.GradNorm),
                     S(r.Tokens), S(r.TokensPerSecond), S(r.StepSeconds), S(r.ElapsedSeconds), S(r.HostRssMb),
                     S(r.HostPeakRssMb), S(r.DeviceUsedPeakMb), S(r.DeviceAllocatedPeakMb), S(r.DeviceReservedPeakMb), S(r.TrainedTokens),
                 }.Concat(taskColumns.Select(c => r.TaskScores?.TryGetValue(c, out var t) == true ? S(t) : "")))
            csv.WriteField(f);
        csv.EndRecord();
        csv.Flush();
    }

    static string S(double x) => double.IsNaN(x) ? "" : x.ToString("G9", CultureInfo.InvariantCulture);
    static string S(long x) => x.ToString(CultureInfo.InvariantCulture);
    static string S(double? x) => x is { } v ? S(v) : "";

    /// <summary>A metrics file larger than this is not one this trainer wrote (a row is ~150 bytes: 1.5 million steps).</summary>
    public const long MaxBytes = 256L << 20;

    /// <summary>No row of ours comes near this (a fixed row is ~150 bytes, each benchmark task column adds a few dozen);
    /// a longer line is binary data or records without newlines.</summary>
    public const int MaxLineBytes = 64 << 10;

    /// <summary>
    /// The column names. Task columns are named after the tasks ("task/metric"), and a task's name may hold a comma or
    /// a quote: the writer quotes such a name as RFC 4180 says (CsvHelper), so the header is read as CSV too. Names
    /// never hold a line break (<see cref="TaskEvaluation.Column"/>), so the header stays one line.
    /// </summary>
    static string[] HeaderFields(string line)
    {
        using var csv = CsvReader.FromText(line, new CsvReaderOptions { HasHeader = false });
        return csv.Read() ? Enumerable.Range(0, csv.FieldCount).Select(csv.GetString).ToArray() : [""];
    }

    /// <summary>Older runs wrote the resident-memory column as memory_mb.</summary>
    static readonly Dictionary<string, string> OlderNames = new() { ["memory_mb"] = "host_rss_mb" };

    /// <summary>Columns a file must have to be one of this trainer's; the others were added later and may be absent.</summary>
    static readonly string[] RequiredColumns = ["step", "epoch", "loss", "val_loss", "learning_rate", "grad_norm", "tokens"];

    /// <summary>
    /// Reads a metrics file by column name (a file written before a column was added still reads; an absent or empty
    /// cell is NaN, null or 0), rows up to <paramref name="throughStep"/> if given, bounded and validated as every
    /// reader of a file from disk is: a regular file of at most <see cref="MaxBytes"/>, lines of at most 64 KiB, a
    /// header naming the columns, every cell empty or a finite number, steps whole and increasing (step 0 only as the
    /// base-model row). A row cut off by a kill during an append (the file's last line, without its newline) is
    /// dropped; anything else wrong is a one-line error naming the file, the line and the column.
    /// </summary>
    public static IReadOnlyList<Row> Read(string path, int? throughStep = null)
    {
        UserFile.RequireRegular(path, "metrics file");
        long length = new FileInfo(path).Length;
        if (length > MaxBytes) throw new InvalidDataException($"{path}: {length} bytes is more than the {MaxBytes}-byte limit for a metrics file; move it aside to resume");
        bool endsWithNewline = length == 0 || UserFile.EndsWithNewline(path, "metrics file");
        var rows = new List<Row>();
        Dictionary<string, int>? columns = null;
        int headerFields = 0;
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
            if (columns is null)
            {
                var fields = HeaderFields(line.Text);
                columns = new Dictionary<string, int>();
                for (int i = 0; i < fields.Length; i++)
                {
                    string name = fields[i].Trim();
                    columns.TryAdd(OlderNames.GetValueOrDefault(name) ?? name, i);
                }
                headerFields = fields.Length;
                if (RequiredColumns.FirstOrDefault(c => !columns.ContainsKey(c)) is { } missing)
                    throw new InvalidDataException($"{where}: header has no '{missing}' column (got {SafeText.Clip(line.Text, 120)}); not a metrics file of this trainer");
                return;
            }
            if (line.Text.Length == 0) return;
            var cells = line.Text.Split(','); // numbers and empty cells: never quoted
            if (cells.Length != headerFields)
                throw new InvalidDataException($"{where}: {cells.Length} fields, the header names {headerFields}; fix or delete the file to resume");
            double? N(string name)
            {
                if (!columns.TryGetValue(name, out int i)) return null;
                string text = cells[i].Trim();
                if (text.Length == 0) return null;
                return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v) ? v
                    : throw new InvalidDataException($"{where}: '{name}' is {SafeText.Quote(text, 40)}, not a finite number; fix or delete the file to resume");
            }
            double D(string name) => N(name) ?? double.NaN;
            long L(string name) => N(name) is { } v && v == Math.Floor(v) && Math.Abs(v) < 1e15 ? (long)v
                : N(name) is null ? 0 : throw new InvalidDataException($"{where}: '{name}' is not a whole number; fix or delete the file to resume");
            double step = N("step") ?? throw new InvalidDataException($"{where}: 'step' is empty; fix or delete the file to resume");
            int previous = rows.Count > 0 ? rows[^1].Step : -1;
            if (step != Math.Floor(step) || step < 0 || step > int.MaxValue || step <= previous || (step == 0 && rows.Count > 0))
                throw new InvalidDataException($"{where}: step {step} does not follow step {(previous < 0 ? "(none)" : previous)}; fix or delete the file to resume");
            if (throughStep is { } limit && step > limit) return;
            var tasks = new Dictionary<string, double>();
            foreach (string name in columns.Keys.Where(h => h.Contains('/')))     // "task/metric" columns
                if (N(name) is { } t) tasks[name] = t;
            rows.Add(new Row((int)step, D("epoch"), D("loss"), N("val_loss"), D("learning_rate"), D("grad_norm"),
                L("tokens"), D("tokens_per_s"), D("step_s"), D("elapsed_s"), D("host_rss_mb"), D("host_peak_rss_mb"),
                N("device_used_peak_mb"), N("device_allocated_peak_mb"), N("device_reserved_peak_mb"), L("trained_tokens"),
                tasks.Count > 0 ? tasks : null));
        }
    }
}
