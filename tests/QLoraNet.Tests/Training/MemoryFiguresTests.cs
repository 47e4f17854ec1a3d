using QLoraNet.Quant.Kernels;
using QLoraNet.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Training;

/// <summary>Memory figures named for what they measure (issue 15 item 1): the run's peak from its intervals, the
/// metrics columns of the CUDA allocator's peaks, and why they are empty.</summary>
[Trait("tier", "unit")]
public class MemoryFiguresTests
{
    [Fact]
    public void The_run_peak_takes_each_figures_maximum_and_a_figure_one_side_lacks_from_the_other()
    {
        var a = new MemorySample(100, 200, 5000, DeviceAllocatedPeakMb: 3000, DeviceReservedPeakMb: null);
        var b = new MemorySample(150, 190, null, DeviceAllocatedPeakMb: 2500, DeviceReservedPeakMb: 4000);
        var m = a.Max(b);
        Assert.Equal(new MemorySample(150, 200, 5000, 3000, 4000), m);
        Assert.Equal(m, b.Max(a));
        var cpu = new MemorySample(1, 2, null).Max(new MemorySample(3, 1, null));
        Assert.Equal(new MemorySample(3, 2, null, null, null), cpu);
    }

    [Fact]
    public void Allocator_columns_are_written_read_back_and_empty_where_not_measured()
    {
        using var tmp = Paths.Temp();
        var log = new MetricsLog(tmp["metrics.csv"], 0);
        log.Append(new MetricsLog.Row(1, 0.1, 2.5, null, 1e-3, 0.5, 100, 50, 2, 2, 300, 310));
        log.Append(new MetricsLog.Row(2, 0.2, 2.4, null, 1e-3, 0.5, 100, 50, 2, 4, 300, 310, DeviceUsedPeakMb: 7000.5,
            DeviceAllocatedPeakMb: 6000.25, DeviceReservedPeakMb: 6500.75, TrainedTokens: 90));
        var lines = File.ReadAllLines(tmp["metrics.csv"]);
        var header = lines[0].Split(',');
        int used = Array.IndexOf(header, "device_used_peak_mb"), allocated = Array.IndexOf(header, "device_allocated_peak_mb"),
            reserved = Array.IndexOf(header, "device_reserved_peak_mb");
        Assert.True(used >= 0 && allocated >= 0 && reserved >= 0, lines[0]);
        var cpu = lines[1].Split(',');
        Assert.Equal(["", "", ""], new[] { cpu[used], cpu[allocated], cpu[reserved] });
        var cuda = lines[2].Split(',');
        Assert.Equal(["7000.5", "6000.25", "6500.75"], new[] { cuda[used], cuda[allocated], cuda[reserved] });

        var rows = MetricsLog.Read(tmp["metrics.csv"]);
        Assert.Null(rows[0].DeviceAllocatedPeakMb);
        Assert.Null(rows[0].DeviceReservedPeakMb);
        Assert.Equal((6000.25, 6500.75, 90L), (rows[1].DeviceAllocatedPeakMb!.Value, rows[1].DeviceReservedPeakMb!.Value, rows[1].TrainedTokens));
    }

    [Fact]
    public void A_metrics_file_from_before_the_allocator_columns_resumes_and_is_rewritten_with_them()
    {
        using var tmp = Paths.Temp();
        File.WriteAllText(tmp["metrics.csv"],
            "step,epoch,loss,val_loss,learning_rate,grad_norm,tokens,tokens_per_s,step_s,elapsed_s,host_rss_mb,host_peak_rss_mb,device_used_peak_mb,trained_tokens\n"
            + "1,0.1,2.5,,0.001,0.5,100,50,2,2,300,310,7000,90\n2,0.2,2.4,,0.001,0.5,100,50,2,4,300,310,7100,91\n");
        var resumed = new MetricsLog(tmp["metrics.csv"], 1);
        Assert.Equal(7000, resumed.Rows.Single().DeviceUsedPeakMb);
        Assert.Null(resumed.Rows.Single().DeviceAllocatedPeakMb);
        Assert.Equal(string.Join(",", MetricsLog.Header), File.ReadLines(tmp["metrics.csv"]).First());
        Assert.Equal(90, MetricsLog.Read(tmp["metrics.csv"]).Single().TrainedTokens);
    }

    [Fact]
    public void A_cpu_run_measures_no_device_and_needs_no_reason()
    {
        var monitor = new MemoryMonitor(CPU);
        Assert.Null(monitor.AllocatorUnavailable);
        var sample = monitor.TakeInterval();
        Assert.Null(sample.DeviceUsedPeakMb);
        Assert.Null(sample.DeviceAllocatedPeakMb);
        Assert.Null(sample.DeviceReservedPeakMb);
        Assert.True(sample.HostPeakRssMb > 0);
    }

    [Fact]
    public void A_cuda_run_whose_allocator_counters_were_refused_says_why()
    {
        var refused = new CudaAllocatorStats.Opening(null, "libtorch 2.12.0: allocator layout not verified (known: 2.11)", "2.12.0");
        var monitor = new MemoryMonitor(new Device(DeviceType.CUDA, 0), refused);
        Assert.Equal(refused.Reason, monitor.AllocatorUnavailable);
    }
}
