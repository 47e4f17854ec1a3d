using System.CommandLine;
using QLoraNet.Training.Trainer;

namespace QLoraNet.Cli;

/// <summary>
/// `plot RUN_DIR [--log-scale] [--out FILE]`: draws a run's loss curve from its metrics.csv again (the same drawing
/// `train` makes at the end): on another machine when the server could not draw it, or with the loss on a log scale.
/// </summary>
public static class PlotCommand
{
    public static Command Create(TextWriter stdout)
    {
        var run = new Argument<string>("run-dir") { Description = "a run's output.dir (holds metrics.csv)" };
        var logScale = new Option<bool>("--log-scale") { Description = "draw the loss on a log10 axis" };
        var output = new Option<string?>("--out") { Description = "PNG to write (default: RUN_DIR/loss.png)" };
        var title = new Option<string?>("--title") { Description = "title above the curve (default: the run directory's name)" };
        var cmd = new Command("plot", "draw a run's loss curve (loss.png) from its metrics.csv");
        cmd.Arguments.Add(run);
        foreach (var o in new Option[] { logScale, output, title }) cmd.Options.Add(o);
        cmd.SetAction(pr =>
        {
            string dir = pr.GetValue(run)!;
            string metrics = Path.Combine(dir, RunOutput.MetricsFile);
            if (!File.Exists(metrics)) throw new FileNotFoundException($"{metrics}: not found; give a run's output.dir", metrics);
            var rows = MetricsLog.Read(metrics);
            if (rows.Count == 0) throw new InvalidDataException($"{metrics}: no rows to draw");
            string outPath = pr.GetValue(output) ?? Path.Combine(dir, RunOutput.LossCurveFile);
            LossCurve.Write(outPath, rows, pr.GetValue(title) ?? Path.GetFileName(Path.GetFullPath(dir)), pr.GetValue(logScale));
            stdout.WriteLine($"wrote {outPath} ({rows.Count} rows of {metrics})");
            return 0;
        });
        return cmd;
    }
}
