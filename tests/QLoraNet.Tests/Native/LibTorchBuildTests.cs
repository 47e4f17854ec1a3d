using QLoraNet.Native;

namespace QLoraNet.Tests.Native;

/// <summary>Reading a libtorch without loading it (ELF headers, version files) and the compatibility checks, on the
/// bundled CPU libtorch 2.10 beside the tests and on copies with a version file.</summary>
[Trait("tier", "unit")]
public class LibTorchBuildTests
{
    static string Bundled => Path.Combine(AppContext.BaseDirectory, LibTorchDiscovery.BundledFolder);
    static string Bridge => LibTorchDiscovery.AppLayout.Current().LibTorchSharp!;

    [Fact]
    public void Elf_reader_gives_the_loader_view_of_libtorch_cpu()
    {
        var elf = ElfLibrary.Read(Path.Combine(Bundled, "libtorch_cpu.so"));
        Assert.Equal("libtorch_cpu.so", elf.SoName);
        Assert.Contains("libc10.so", elf.Needed);
        Assert.Equal([LibTorchLoaderPath(Bundled)], elf.SearchPaths);   // $ORIGIN
        Assert.Equal(ElfLibrary.X8664, elf.Machine);
    }

    static string LibTorchLoaderPath(string dir) => Path.GetFullPath(dir).TrimEnd('/');

    [Fact]
    public void The_bundled_build_is_ordered_by_its_dependencies_and_exports_what_TorchSharp_imports()
    {
        var build = LibTorchBuild.Inspect(new LibTorchLocation(Bundled, LibTorchSource.Bundled, "bundled"));
        Assert.False(build.IsCuda);
        Assert.Equal(["libc10.so", "libtorch_cpu.so", "libtorch.so"], build.Libraries.Select(l => Path.GetFileName(l.Path)));
        var bridge = ElfLibrary.Read(Bridge);
        Assert.True(bridge.UnversionedImports().Count > 1000);   // TorchSharp 0.107 calls ~1200 libtorch functions
        Assert.Null(LibTorchCompatibility.Problem(build with { Version = "2.10.0" }, bridge));
    }

    [Fact]
    public void A_build_missing_functions_is_refused_with_the_count_and_an_example()
    {
        var c10 = ElfLibrary.Read(Path.Combine(Bundled, "libc10.so"));
        var partial = new LibTorchBuild(new LibTorchLocation("/x", LibTorchSource.Variable, "v"), "2.10.0", false, [c10]);
        string? problem = LibTorchCompatibility.Problem(partial, ElfLibrary.Read(Bridge));
        Assert.NotNull(problem);
        Assert.Matches(@"^libtorch 2\.10\.0 at /x lacks \d+ of the \d+ functions TorchSharp 0\.107 calls \(e\.g\. _Z", problem);
    }

    [Theory]
    [InlineData("2.10.0", true)]
    [InlineData("2.11.0+cu130", true)]
    [InlineData("2.12.1", true)]
    [InlineData("2.9.1+cu121", false)]
    [InlineData("1.13.0a0", false)]
    [InlineData("3.0.0", false)]
    [InlineData("nightly", false)]
    public void Versions_from_2_10_to_any_newer_2_x_are_compatible(string version, bool ok)
    {
        var build = new LibTorchBuild(new LibTorchLocation("/x", LibTorchSource.Variable, "v"), version, true, []);
        string? problem = LibTorchCompatibility.Problem(build, null);
        if (ok) Assert.Null(problem);
        else Assert.Equal($"libtorch {version} at /x is not 2.10-compatible (TorchSharp 0.107 needs libtorch 2.10 or a newer 2.x)", problem);
    }

    [Fact]
    public void Version_comes_from_version_py_then_build_version_then_the_header()
    {
        using var t = Paths.Temp();
        Directory.CreateDirectory(t["torch/lib"]);
        Directory.CreateDirectory(t["torch/include/torch"]);
        File.WriteAllText(t["torch/include/torch/version.h"], "#pragma once\n#define TORCH_VERSION \"2.10.1\"\n");
        Assert.Equal("2.10.1", LibTorchBuild.ReadVersion(t["torch/lib"]));
        File.WriteAllText(t["torch/build-version"], "2.10.0+cu128\n");
        Assert.Equal("2.10.0+cu128", LibTorchBuild.ReadVersion(t["torch/lib"]));
        File.WriteAllText(t["torch/version.py"], "from typing import Optional\n__version__ = '2.11.0+cu130'\ncuda: Optional[str] = '13.0'\n");
        Assert.Equal("2.11.0+cu130", LibTorchBuild.ReadVersion(t["torch/lib"]));
        Assert.Null(LibTorchBuild.ReadVersion(t["torch"]));
    }

    [Fact]
    public void Garbage_and_truncated_files_are_one_line_errors()
    {
        using var t = Paths.Temp();
        File.WriteAllText(t["text.so"], "not a library");
        Assert.Equal($"{t["text.so"]}: not an ELF file", Assert.Throws<InvalidDataException>(() => ElfLibrary.Read(t["text.so"])).Message);
        var head = File.ReadAllBytes(Path.Combine(Bundled, "libc10.so"))[..4096];
        File.WriteAllBytes(t["cut.so"], head);
        Assert.Contains("truncated", Assert.Throws<InvalidDataException>(() => ElfLibrary.Read(t["cut.so"])).Message);
    }
}
