namespace QLoraNet.Training.Trainer;

/// <summary>The loss curve of a run (training loss per step, validation loss where evaluated) as a PNG, with ScottPlot.</summary>
public static class LossCurve
{
    public static void Write(string path, IReadOnlyList<MetricsLog.Row> rows, string title)
    {
        var plot = new ScottPlot.Plot();
        var train = plot.Add.Scatter(rows.Select(r => (double)r.Step).ToArray(), rows.Select(r => r.Loss).ToArray());
        train.LegendText = "train";
        train.MarkerSize = 0;
        var evals = rows.Where(r => r.ValidationLoss.HasValue).ToList();
        if (evals.Count > 0)
        {
            var val = plot.Add.Scatter(evals.Select(r => (double)r.Step).ToArray(), evals.Select(r => r.ValidationLoss!.Value).ToArray());
            val.LegendText = "validation";
            val.MarkerSize = 6;
        }
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel("loss (mean per trained token)");
        plot.ShowLegend();
        plot.SavePng(path, 900, 520);
    }
}
