using System.Globalization;
using QLoraNet.Formats;
using ScottPlot;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// The loss curve of a run as a PNG (ScottPlot): on top the training loss per step and the validation loss where
/// evaluated (step 0 = the base model before training), as marked points; below, the learning rate on the same
/// steps. The legend sits above the data, never on it. <c>logScale</c> draws the loss on a log10 axis. Text uses
/// the embedded <see cref="PlotFont"/>, so it draws the same on a server without fonts.
/// </summary>
public static class LossCurve
{
    public static void Write(string path, IReadOnlyList<MetricsLog.Row> rows, string title, bool logScale = false)
    {
        string font = PlotFont.Ensure();
        var steps = rows.Where(r => r.IsStep && double.IsFinite(r.Loss)).ToList();
        var evals = rows.Where(r => r.ValidationLoss is { } v && double.IsFinite(v)).ToList();
        Func<double, double> y = logScale ? Math.Log10 : v => v;
        double lastStep = Math.Max(1, rows.Count == 0 ? 1 : rows.Max(r => r.Step));

        var loss = new Plot();
        var train = loss.Add.Scatter(steps.Select(r => (double)r.Step).ToArray(), steps.Select(r => y(r.Loss)).ToArray());
        train.LegendText = "train";
        train.MarkerSize = 0;
        train.LineWidth = 1.5f;
        if (evals.Count > 0)
        {
            var val = loss.Add.Scatter(evals.Select(r => (double)r.Step).ToArray(), evals.Select(r => y(r.ValidationLoss!.Value)).ToArray());
            val.LegendText = evals[0].Step == 0 ? "validation (step 0 = base model)" : "validation";
            val.MarkerSize = 8;
            val.MarkerShape = MarkerShape.FilledCircle;
            val.LineWidth = 1;
            val.LinePattern = LinePattern.Dashed;
        }
        loss.Title(title);
        loss.YLabel(logScale ? "loss per trained token (log scale)" : "loss (mean per trained token)");
        if (logScale)
            loss.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
            {
                MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
                LabelFormatter = v => Math.Pow(10, v).ToString("G3", CultureInfo.InvariantCulture),
            };
        loss.ShowLegend(Edge.Top);

        var lr = new Plot();
        var rate = lr.Add.Scatter(steps.Select(r => (double)r.Step).ToArray(), steps.Select(r => r.LearningRate).ToArray());
        rate.MarkerSize = 0;
        rate.LineWidth = 1.5f;
        lr.XLabel("step");
        lr.YLabel("learning rate");

        // Both panels show the same steps with the same margins, so their x axes line up.
        loss.Layout.Fixed(new PixelPadding(90, 25, 40, 110));
        lr.Layout.Fixed(new PixelPadding(90, 25, 55, 10));
        foreach (var p in new[] { loss, lr })
        {
            p.Font.Set(font);
            p.Axes.SetLimitsX(-0.02 * lastStep, 1.02 * lastStep);
        }
        var figure = new Multiplot();
        figure.Reset(loss);
        figure.AddPlot(lr);
        var layout = new ScottPlot.MultiplotLayouts.DraggableRows();
        layout.SetHeights([440f, 200f]);
        figure.Layout = layout;
        using var image = figure.Render(900, 660);
        byte[] png = image.GetImageBytes(ImageFormat.Png, 100);
        AtomicFile.Write(path, s => s.Write(png));
    }
}
