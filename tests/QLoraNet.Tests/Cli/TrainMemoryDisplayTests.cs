using QLoraNet.Cli;
using QLoraNet.Training.Trainer;

namespace QLoraNet.Tests.Cli;

/// <summary>What `train` prints about memory (issue 15 item 1): each figure named, shown only when measured, and why
/// the allocator's are missing on a CUDA run that could not read them.</summary>
[Trait("tier", "unit")]
public class TrainMemoryDisplayTests
{
    static StepMetrics Step(int step, MemorySample memory) =>
        new(step, 10, 0.1, 2.5, 1e-3, 0.5, 100, 50, 2, 2, 60, 300L << 20, memory);

    [Fact]
    public void The_progress_line_names_the_allocators_peaks_and_the_devices_used_memory()
    {
        var stdout = new StringWriter();
        var observer = new ConsoleTrainingObserver(stdout);
        observer.OnStep(Step(1, new MemorySample(300, 812, 7004, DeviceAllocatedPeakMb: 6000, DeviceReservedPeakMb: 6500)));
        observer.OnStep(Step(2, new MemorySample(300, 812, 7004, DeviceAllocatedPeakMb: null, DeviceReservedPeakMb: null)));
        observer.OnStep(Step(3, new MemorySample(300, 812, null)));
        var lines = stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.EndsWith("host peak 812 MiB  cuda alloc 5.86 / resv 6.35 / used 6.84 GiB", lines[0]);
        Assert.EndsWith("host peak 812 MiB  cuda used 6.84 GiB", lines[1]);
        Assert.EndsWith("host peak 812 MiB", lines[2]);
    }

    [Fact]
    public void The_summary_gives_each_peak_and_says_why_the_allocators_are_missing()
    {
        var peak = new MemorySample(300, 812, 7004, 6000, 6500);
        var measured = new StringWriter();
        new ConsoleTrainingObserver(measured).Finish(new TrainResult("out", null, 3, 2.5, null, TrainStop.Completed, null, PeakMemory: peak));
        Assert.Contains("memory: host peak resident set 812 MiB, CUDA allocated peak 5.86 GiB (in tensors), reserved peak 6.35 GiB"
            + " (held by the caching allocator), device used at peak 6.84 GiB", measured.ToString());

        var refused = new StringWriter();
        new ConsoleTrainingObserver(refused).Finish(new TrainResult("out", null, 3, 2.5, null, TrainStop.Completed, null,
            PeakMemory: new MemorySample(300, 812, 7004), DeviceAllocatorUnavailable: "libtorch 2.12.0: allocator layout not verified (known: 2.11)"));
        Assert.Contains("device used at peak 6.84 GiB (device-wide: allocator cache, context, other processes); allocated/reserved not reported: libtorch 2.12.0: allocator layout not verified", refused.ToString());
        Assert.DoesNotContain("allocated peak", refused.ToString());

        var cpu = new StringWriter();
        new ConsoleTrainingObserver(cpu).Finish(new TrainResult("out", null, 3, 2.5, null, TrainStop.Completed, null, PeakMemory: new MemorySample(300, 812, null)));
        Assert.Contains("memory: host peak resident set 812 MiB" + Environment.NewLine, cpu.ToString());
    }
}
