using QLoraNet.Native;

namespace QLoraNet.Tests.Native;

/// <summary>Where discovery looks, in which order, against fake directory trees (empty files stand for the libraries).</summary>
[Trait("tier", "unit")]
public class LibTorchSearchTests
{
    static void FakeLib(string dir, bool cuda = false)
    {
        Directory.CreateDirectory(dir);
        foreach (var f in LibTorchBuild.CpuLibraries.Concat(cuda ? LibTorchBuild.CudaLibraries : [])) File.WriteAllText(Path.Combine(dir, f), "");
    }

    static LibTorchEnvironment Env(TempDir t, Dictionary<string, string>? vars = null, Func<string?>? python = null) =>
        new(n => vars != null && vars.TryGetValue(n, out var v) ? v : null, t["home"], t["root"], python ?? (() => null));

    [Fact]
    public void Locations_come_in_the_documented_order()
    {
        using var t = Paths.Temp();
        string venv = t["venv"], ld = t["ld"];
        FakeLib(Path.Combine(venv, "lib", "python3.11", "site-packages", "torch", "lib"));
        FakeLib(t["root/usr/local/lib/python3.12/dist-packages/torch/lib"]);
        FakeLib(t["root/usr/lib/python3/dist-packages/torch/lib"]);
        FakeLib(t["home/.local/lib/python3.10/site-packages/torch/lib"]);
        FakeLib(t["root/opt/app/.venv/lib/python3.11/site-packages/torch/lib"]);
        FakeLib(t["root/opt/libtorch/lib"]);
        FakeLib(ld);
        Directory.CreateDirectory(t["root/usr/local/libtorch/lib"]); // no libraries: not a location

        var found = LibTorchSearch.Locations(Env(t, new() { ["VIRTUAL_ENV"] = venv, ["LD_LIBRARY_PATH"] = $"/nonexistent:{ld}" })).ToList();

        Assert.Equal(
            [LibTorchSource.PythonInstall, LibTorchSource.PythonInstall, LibTorchSource.PythonInstall, LibTorchSource.PythonInstall,
             LibTorchSource.PythonInstall, LibTorchSource.Download, LibTorchSource.LibraryPath],
            found.Select(l => l.Source));
        Assert.Equal("$VIRTUAL_ENV", found[0].Origin);
        Assert.Equal(t["root/usr/lib/python3/dist-packages/torch/lib"], found[1].Directory);      // /usr/lib before /usr/local/lib
        Assert.Equal(t["root/usr/local/lib/python3.12/dist-packages/torch/lib"], found[2].Directory);
        Assert.Equal(t["home/.local/lib/python3.10/site-packages/torch/lib"], found[3].Directory);
        Assert.Equal(t["root/opt/app/.venv/lib/python3.11/site-packages/torch/lib"], found[4].Directory);
        Assert.Equal(t["root/opt/libtorch/lib"], found[5].Directory);
        Assert.Equal(ld, found[6].Directory);
    }

    [Fact]
    public void Newer_python_comes_first_and_a_directory_is_listed_once()
    {
        using var t = Paths.Temp();
        FakeLib(t["root/usr/local/lib/python3.9/site-packages/torch/lib"]);
        FakeLib(t["root/usr/local/lib/python3.12/site-packages/torch/lib"]);
        string twelve = t["root/usr/local/lib/python3.12/site-packages/torch/lib"];
        var found = LibTorchSearch.Locations(Env(t, new() { ["LD_LIBRARY_PATH"] = twelve })).Select(l => l.Directory).ToList();
        Assert.Equal([twelve, t["root/usr/local/lib/python3.9/site-packages/torch/lib"]], found);
    }

    [Fact]
    public void The_variable_may_name_the_library_directory_a_libtorch_root_or_a_torch_parent()
    {
        using var t = Paths.Temp();
        FakeLib(t["a"]);
        FakeLib(t["b/lib"]);
        FakeLib(t["c/torch/lib"]);
        Assert.Equal(t["a"], LibTorchSearch.FromVariable(t["a"]));
        Assert.Equal(t["b/lib"], LibTorchSearch.FromVariable(t["b"]));
        Assert.Equal(t["c/torch/lib"], LibTorchSearch.FromVariable(t["c"]));
        Assert.Null(LibTorchSearch.FromVariable(t["missing"]));
    }

    [Fact]
    public void A_variable_without_libtorch_is_the_reason_and_nothing_else_is_searched()
    {
        using var t = Paths.Temp();
        FakeLib(t["root/opt/libtorch/lib"], cuda: true);
        bool asked = false;
        var choice = LibTorchDiscovery.Find(Env(t, new() { [LibTorchSearch.Variable] = t["garbage"] }, () => { asked = true; return null; }), null);
        Assert.Null(choice.Build);
        Assert.Equal($"QLORANET_LIBTORCH={t["garbage"]} holds no libtorch (no libtorch_cpu.so in it, its lib/ or its torch/lib/)", choice.Reason);
        Assert.False(asked);
    }

    [Fact]
    public void A_variable_naming_files_that_are_not_libraries_says_so()
    {
        using var t = Paths.Temp();
        FakeLib(t["junk"]);
        var choice = LibTorchDiscovery.Find(Env(t, new() { [LibTorchSearch.Variable] = t["junk"] }), null);
        Assert.Null(choice.Build);
        Assert.StartsWith($"QLORANET_LIBTORCH={t["junk"]}: {Path.Combine(t["junk"], "libc10.so")}: not an ELF file; install PyTorch", choice.Reason);
    }

    [Fact]
    public void Bundled_skips_the_search()
    {
        using var t = Paths.Temp();
        var choice = LibTorchDiscovery.Find(Env(t, new() { [LibTorchSearch.Variable] = "bundled" }), null);
        Assert.Equal((null, "QLORANET_LIBTORCH=bundled"), (choice.Build, choice.Reason));
    }

    [Fact]
    public void Python_is_asked_only_when_the_cheap_places_hold_no_usable_build_and_unusable_ones_are_listed()
    {
        using var t = Paths.Temp();
        FakeLib(t["root/opt/libtorch/lib"], cuda: true);   // empty files: not libraries
        int asked = 0;
        var choice = LibTorchDiscovery.Find(Env(t, python: () => { asked++; return t["root/opt/libtorch/lib"]; }), null);
        Assert.Equal(1, asked);
        Assert.Null(choice.Build);
        string why = Assert.Single(choice.Skipped);
        Assert.Contains("not an ELF file", why);
        Assert.Equal($"no usable CUDA libtorch ({why})", choice.Reason);

        using var empty = Paths.Temp();
        var none = LibTorchDiscovery.Find(Env(empty), null);
        Assert.StartsWith("no CUDA libtorch found (looked at QLORANET_LIBTORCH, PyTorch installs, python3", none.Reason);
    }
}
