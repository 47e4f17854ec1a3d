namespace QLoraNet.Tests;

/// <summary>
/// Runs work that must finish (a read of a FIFO, a pathological regex): a hang becomes a failed assertion that names
/// what hung, never a stuck test run. The one place the tests block on a task with a time limit.
/// </summary>
static class Bounded
{
    public static T Within<T>(TimeSpan limit, string whatHung, Func<T> work)
    {
        var task = Task.Run(work);
        Assert.True(task.Wait(limit), $"{whatHung} (still running after {limit.TotalSeconds:0} s)");
        return task.GetAwaiter().GetResult();
    }
}
