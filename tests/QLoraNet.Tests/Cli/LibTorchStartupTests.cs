using QLoraNet.Native;

namespace QLoraNet.Tests.Cli;

/// <summary>
/// The libtorch a fresh CLI process loads and the line it says so with: the bundled CPU build with the reason when
/// QLORANET_LIBTORCH names garbage or a wrong version, a build QLORANET_LIBTORCH names (here: the CPU libtorch of the
/// NuGet cache, as links) loaded instead of the bundled copy, which then is never mapped.
/// </summary>
[Trait("tier", "e2e")]
public class LibTorchStartupTests
{
    static string BundledDir => Path.Combine(AppContext.BaseDirectory, LibTorchDiscovery.BundledFolder);

    [Fact]
    public void Garbage_in_QLORANET_LIBTORCH_falls_back_to_the_bundled_cpu_build_with_one_line()
    {
        using var t = Paths.Temp();
        var r = CliProcess.Run(new Dictionary<string, string?> { ["QLORANET_LIBTORCH"] = t["nothing-here"] }, null, "info");
        Assert.Equal(0, r.Code);
        string first = r.Stderr.Split('\n')[0];
        Assert.Equal($"libtorch 2.10.0 (CPU, bundled) from {BundledDir}: QLORANET_LIBTORCH={t["nothing-here"]} holds no libtorch (no libtorch_cpu.so in it, its lib/ or its torch/lib/)", first);
        Assert.Contains($"libtorch files: {Path.Combine(BundledDir, "libc10.so")}, {Path.Combine(BundledDir, "libtorch.so")}, {Path.Combine(BundledDir, "libtorch_cpu.so")}", r.Stdout);
    }

    [Fact]
    public void A_build_named_by_QLORANET_LIBTORCH_is_loaded_instead_of_the_bundled_copy_and_a_wrong_version_is_refused()
    {
        using var t = Paths.Temp();
        string lib = t["libtorch/lib"];
        Directory.CreateDirectory(lib);
        // Links to the bundled files' originals would share their inodes; copies of the small ones and a link to the big
        // one are other files, as another install would be.
        foreach (var f in Directory.GetFiles(BundledDir))
        {
            string name = Path.GetFileName(f);
            if (name == "libtorch_cpu.so") File.CreateSymbolicLink(Path.Combine(lib, name), f);
            else File.Copy(f, Path.Combine(lib, name));
        }
        File.WriteAllText(t["libtorch/build-version"], "2.10.0+cpu\n");
        var env = new Dictionary<string, string?> { ["QLORANET_LIBTORCH"] = t["libtorch"] };

        var r = CliProcess.Run(env, null, "info");
        Assert.Equal(0, r.Code);
        Assert.Equal($"libtorch 2.10.0+cpu (CPU) from {lib} (QLORANET_LIBTORCH)", r.Stderr.Split('\n')[0]);
        string files = r.Stdout.Split('\n').Single(l => l.StartsWith("libtorch files: ", StringComparison.Ordinal));
        Assert.Contains(Path.Combine(lib, "libc10.so"), files);
        Assert.DoesNotContain(BundledDir + "/libc10.so", files);
        Assert.Equal(1, files.Split(", ").Count(f => f.EndsWith("/libtorch_cpu.so", StringComparison.Ordinal)));   // one copy only

        File.WriteAllText(t["libtorch/build-version"], "2.9.1+cpu\n");
        var old = CliProcess.Run(env, null, "info");
        Assert.Equal(0, old.Code);
        Assert.StartsWith($"libtorch 2.10.0 (CPU, bundled) from {BundledDir}: QLORANET_LIBTORCH={t["libtorch"]}: libtorch 2.9.1+cpu at {lib} is not 2.10-compatible", old.Stderr.Split('\n')[0]);
    }

    [Fact]
    public void Device_cuda_without_a_gpu_says_what_was_found_and_what_to_install()
    {
        var r = CliProcess.Run(new Dictionary<string, string?> { ["QLORANET_LIBTORCH"] = "bundled" }, null,
            "generate", "--model", Paths.TinyModel, "--prompt", "hi", "--device", "cuda");
        Assert.Equal(1, r.Code);
        var lines = r.Stderr.TrimEnd().Split('\n');
        Assert.Equal(2, lines.Length);
        Assert.StartsWith("libtorch 2.10.0 (CPU, bundled) from ", lines[0]);
        Assert.Equal("error: --device is cuda but libtorch sees no CUDA device: running on the bundled CPU libtorch (QLORANET_LIBTORCH=bundled); "
            + LibTorchCompatibility.InstallHint + " (README, Backends)", lines[1]);
    }
}
