using QLoraNet.Native;

namespace QLoraNet.Tests.Native;

/// <summary>The allocator configuration a process starts with (<see cref="CudaAllocatorDefaults"/>).</summary>
[Trait("tier", "e2e")]
public class CudaAllocatorDefaultsTests
{
    [Fact]
    public void Libtorch_reads_expandable_segments_unless_the_user_set_the_variable()
    {
        LibTorchDiscovery.EnsureLoaded();
        string? native = CudaAllocatorDefaults.NativeValue();
        if (OperatingSystem.IsLinux())
        {
            // The test host started without the variable (CI, a developer shell) or with the user's own value.
            Assert.NotNull(native);
            Assert.Equal(native, Environment.GetEnvironmentVariable(CudaAllocatorDefaults.Variable));   // children inherit the same
            Assert.Equal(native, CudaAllocatorDefaults.Apply());                                        // applying again changes nothing
        }
    }

    [Fact]
    public void A_fresh_process_starts_with_expandable_segments_and_keeps_the_users_value()
    {
        if (!OperatingSystem.IsLinux()) return;
        var unset = CliProcess.Run(new Dictionary<string, string?> { [CudaAllocatorDefaults.Variable] = null }, null, "info");
        Assert.True(unset.Code == 0, unset.Stderr);
        Assert.Contains("CUDA allocator: PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (QLoraNet's default", unset.Stdout);

        var mine = CliProcess.Run(new Dictionary<string, string?> { [CudaAllocatorDefaults.Variable] = "garbage_collection_threshold:0.6" }, null, "info");
        Assert.Contains("CUDA allocator: PYTORCH_CUDA_ALLOC_CONF=garbage_collection_threshold:0.6 (as set)", mine.Stdout);

        var renamed = CliProcess.Run(new Dictionary<string, string?> { [CudaAllocatorDefaults.Variable] = null, [CudaAllocatorDefaults.NewVariable] = "expandable_segments:False" }, null, "info");
        Assert.Contains("CUDA allocator: PYTORCH_ALLOC_CONF=expandable_segments:False (as set)", renamed.Stdout);
    }
}
