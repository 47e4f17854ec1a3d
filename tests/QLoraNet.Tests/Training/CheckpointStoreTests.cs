using QLoraNet.Training.Trainer;

namespace QLoraNet.Tests.Training;

/// <summary>The store's file callback is injected (no static hook): a callback that throws aborts the save as a kill
/// would, leaving earlier checkpoints intact and no partial one.</summary>
[Trait("tier", "unit")]
public class CheckpointStoreTests
{
    static void WriteOne(string dir, Action<string> written)
    {
        File.WriteAllText(Path.Combine(dir, "weights"), "w");
        written(Path.Combine(dir, "weights"));
    }

    [Fact]
    public void A_save_aborted_midway_leaves_the_earlier_checkpoints_as_they_were()
    {
        using var tmp = Paths.Temp();
        var seen = new List<string>();
        var store = new CheckpointStore(tmp.Path, keepLast: 3, onFileWritten: f =>
        {
            seen.Add(Path.GetFileName(f));
            if (f.Contains(".step-2.tmp")) throw new IOException("simulated kill");
        });
        store.Save(1, TrainerState.Start with { Step = 1 }, WriteOne, bestStep: null);
        Assert.Throws<IOException>(() => store.Save(2, TrainerState.Start with { Step = 2 }, WriteOne, bestStep: null));

        Assert.Equal(new[] { "weights", TrainerState.FileName, "weights" }, seen);
        Assert.Equal(new[] { 1 }, store.List().Select(c => c.Step));
        Assert.Empty(Directory.GetDirectories(store.Root, ".*"));
        // Another store on the same directory has no callback: nothing global was left set.
        new CheckpointStore(tmp.Path, keepLast: 3).Save(2, TrainerState.Start with { Step = 2 }, WriteOne, bestStep: null);
        Assert.Equal(new[] { 1, 2 }, store.List().Select(c => c.Step));
    }
}
