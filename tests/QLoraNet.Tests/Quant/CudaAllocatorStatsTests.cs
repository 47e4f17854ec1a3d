using System.Buffers.Binary;
using System.Text.Json;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Quant;

[Trait("tier", "unit")]
public class CudaAllocatorStatsTests
{
    [Theory]
    [InlineData("2.11.0+cu130")]
    [InlineData("2.11.1")]
    [InlineData("2.11")]
    public void A_verified_version_gets_its_layout_by_major_minor(string version)
    {
        var layout = CudaAllocatorLayout.For(version, out string reason);
        Assert.NotNull(layout);
        Assert.Equal("", reason);
        Assert.Equal("2.11", layout!.Version);
        Assert.True(layout.IsConsistent);
    }

    [Theory]
    [InlineData("2.9.1+cu128")]
    [InlineData("2.12.0")]
    [InlineData("2.110.0")]
    [InlineData("3.0.0")]
    [InlineData("nightly")]
    [InlineData(null)]
    public void An_unverified_version_is_refused_with_the_reason(string? version)
    {
        Assert.Null(CudaAllocatorLayout.For(version, out string reason));
        Assert.Contains("allocator layout not verified", reason);
        Assert.Contains(version ?? "unknown version", reason);
    }

    [Fact]
    public void Every_layout_in_the_table_keeps_its_stats_inside_the_returned_struct()
    {
        foreach (var (key, layout) in CudaAllocatorLayout.Known)
        {
            Assert.Equal(key, layout.Version);
            Assert.True(layout.IsConsistent, key);
        }
    }

    [Fact]
    public void The_reader_takes_current_and_peak_of_the_aggregate_stat_at_the_layouts_offsets()
    {
        var layout = CudaAllocatorLayout.Known["2.11"];
        var buffer = new byte[layout.DeviceStatsBytes];
        // Every int64 of the struct holds its own index, so a reader off by one field reads another number.
        for (int i = 0; i < buffer.Length / 8; i++) BinaryPrimitives.WriteInt64LittleEndian(buffer.AsSpan(i * 8), 1000 + i);
        var c = layout.Read(buffer);
        Assert.Equal(1000 + 384 / 8, c.AllocatedCurrent);
        Assert.Equal(1000 + 384 / 8 + 1, c.AllocatedPeak);
        Assert.Equal(1000 + 480 / 8, c.ReservedCurrent);
        Assert.Equal(1000 + 480 / 8 + 1, c.ReservedPeak);
        Assert.Throws<ArgumentException>(() => layout.Read(buffer.AsSpan(0, layout.DeviceStatsBytes - 8)));
    }

    [Fact]
    public void Counters_that_cannot_be_the_allocators_are_named()
    {
        Assert.Null(new CudaAllocatorCounters(10, 20, 30, 40).Inconsistency());
        Assert.Contains("negative", new CudaAllocatorCounters(-1, 20, 30, 40).Inconsistency());
        Assert.Contains("peak below", new CudaAllocatorCounters(10, 5, 30, 40).Inconsistency());
        Assert.Contains("peak below", new CudaAllocatorCounters(10, 20, 30, 25).Inconsistency());
        Assert.Contains("above reserved", new CudaAllocatorCounters(50, 60, 30, 40).Inconsistency());
    }

    [Fact]
    public void The_memory_map_parser_keeps_file_regions_and_their_permissions()
    {
        var map = ProcessMemoryMap.Parse([
            "7f0000000000-7f0000001000 r--p 00000000 08:01 123 /opt/torch/lib/libc10_cuda.so",
            "7f0000001000-7f0000003000 r-xp 00001000 08:01 123 /opt/torch/lib/libc10_cuda.so",
            "7f0000003000-7f0000004000 rw-p 00000000 00:00 0 ",
            "7f0000004000-7f0000005000 r--p 00000000 08:01 124 /opt/torch/lib/libc10.so (deleted)",
            "garbage",
        ]);
        Assert.Equal(3, map.Regions.Count);
        Assert.Equal(["/opt/torch/lib/libc10_cuda.so"], map.PathsNamed("libc10_cuda.so"));
        Assert.Equal(["/opt/torch/lib/libc10.so"], map.PathsNamed("libc10.so"));
        Assert.True(map.Find(0x7f0000001800) is { Executable: true });
        Assert.True(map.Find(0x7f0000000ff8, 8) is { Executable: false, Readable: true });
        Assert.Null(map.Find(0x7f0000000ffc, 8));   // runs past the region's end
        Assert.Null(map.Find(0x7f0000003800));      // anonymous
        Assert.Null(map.Find(ulong.MaxValue, 16));
    }

    [Fact]
    public void The_version_is_read_from_the_files_beside_the_libraries()
    {
        using var dir = Paths.Temp();
        Directory.CreateDirectory(dir["lib"]);
        Assert.Null(CudaAllocatorStats.ReadVersion(dir["lib"]));
        File.WriteAllText(dir["build-version"], "2.10.0+cpu\n");
        Assert.Equal("2.10.0+cpu", CudaAllocatorStats.ReadVersion(dir["lib"]));
        File.WriteAllText(dir["version.py"], "from typing import Optional\n__version__ = '2.11.0+cu130'\n");
        Assert.Equal("2.11.0+cu130", CudaAllocatorStats.ReadVersion(dir["lib"] + "/"));
    }

    [Fact]
    public void A_cpu_device_or_a_cpu_libtorch_gives_a_reason_and_calls_nothing()
    {
        var cpu = CudaAllocatorStats.Open(CPU);
        Assert.Null(cpu.Stats);
        Assert.Contains("not a CUDA device", cpu.Reason);
        if (ProcessMemoryMap.Current().PathsNamed("libc10_cuda.so").Count > 0) return; // a CUDA libtorch: the GPU run checks it
        var cuda = CudaAllocatorStats.Open(new Device(DeviceType.CUDA, 0));
        Assert.Null(cuda.Stats);
        Assert.Contains("no CUDA libtorch loaded", cuda.Reason);
        Assert.Null(cuda.SelfCheck);
    }
}

[Trait("tier", "e2e")]
public class AllocatorCheckCliTests
{
    [Fact]
    public void Info_allocator_prints_one_json_object_and_exits_1_without_the_counters()
    {
        var (code, stdout, stderr) = CliRunner.Run("info", "--allocator");
        using var json = JsonDocument.Parse(stdout);
        var root = json.RootElement;
        Assert.Equal(root.GetProperty("ok").GetBoolean() ? 0 : 1, code);
        if (TorchSharp.torch.cuda.is_available()) return; // the GPU run (scripts/gpu/allocator_probe.sh) judges the figures
        Assert.Equal("unavailable", root.GetProperty("status").GetString());
        Assert.False(string.IsNullOrEmpty(root.GetProperty("reason").GetString()), stderr);
    }
}
