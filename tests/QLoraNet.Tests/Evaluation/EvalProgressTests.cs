using QLoraNet.Evaluation;

namespace QLoraNet.Tests.Evaluation;

/// <summary>The progress `eval --tasks` draws: one report per batch, counts rising to the task's request total, and
/// the ETA extrapolated linearly from the elapsed time.</summary>
[Trait("tier", "unit")]
public class EvalProgressTests
{
    /// <summary>Records reports on the calling thread (Progress&lt;T&gt; would post them to a thread pool).</summary>
    sealed class Recorder : IProgress<EvalProgress>
    {
        public readonly List<EvalProgress> Reports = new();
        public void Report(EvalProgress value) => Reports.Add(value);
    }

    [Fact]
    public void One_report_per_batch_up_to_the_request_total()
    {
        var model = new MockScoringModel((_, cont) => -cont.Length);
        var recorder = new Recorder();
        // The fixture's ARC-Easy rows, a request per choice, in batches of 3: reports at 3, 6, ..., total.
        var selection = TaskCatalog.BuiltIn().Resolve(["arc_easy"]);
        var data = new Dictionary<string, string> { ["arc_easy"] = EvalFixtures.Path_("arc") };
        EvalRunner.Run(model, selection, new EvalOptions(BatchSize: 3), data, recorder);

        int total = model.Requests.Count;
        Assert.True(total > 3, $"{total} requests: too few for several batches");
        var reports = recorder.Reports.Where(r => r.Phase == "log-likelihoods").ToList();
        Assert.All(reports, r => Assert.Equal(("arc_easy", total), (r.Task, r.Total)));
        Assert.Equal(Enumerable.Range(1, (total + 2) / 3).Select(i => Math.Min(3 * i, total)), reports.Select(r => r.Done));
        Assert.Null(reports[^1].Eta);                                                          // done: nothing left
    }

    [Fact]
    public void Eta_extrapolates_the_elapsed_time_per_request()
    {
        Assert.Equal(TimeSpan.FromSeconds(30), new EvalProgress("t", "p", 1, 4, TimeSpan.FromSeconds(10)).Eta);
        Assert.Equal(TimeSpan.FromSeconds(2), new EvalProgress("t", "p", 10, 12, TimeSpan.FromSeconds(10)).Eta);
        Assert.Null(new EvalProgress("t", "p", 0, 4, TimeSpan.FromSeconds(1)).Eta);            // no rate yet
        Assert.Null(new EvalProgress("t", "p", 4, 4, TimeSpan.FromSeconds(9)).Eta);
    }
}
