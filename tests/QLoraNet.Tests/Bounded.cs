namespace QLoraNet.Tests;

/// <summary>
/// Runs work that must finish (a read of a FIFO, a pathological regex): a hang becomes a failed assertion that names
/// what hung, never a stuck test run. The one place the tests block on a task with a time limit.
/// </summary>
static class Bounded
{
    public static T Within<T>(TimeSpan limit, string whatHung, Func<T> work)
    {
        // A thread of its own, not a thread-pool item: with the other test classes running in parallel and blocking
        // pool threads, a queued item can wait for a thread long enough to look like the hang it is meant to catch.
        var task = Task.Factory.StartNew(work, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        Assert.True(task.Wait(limit), $"{whatHung} (still running after {limit.TotalSeconds:0} s)");
        return task.GetAwaiter().GetResult();
    }
}
