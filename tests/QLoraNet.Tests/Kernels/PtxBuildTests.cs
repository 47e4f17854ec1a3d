using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using QLoraNet.Kernels;
using QLoraNet.Quant.Kernels;

namespace QLoraNet.Tests.Kernels;

/// <summary>
/// The committed PTX is what scripts/build_ptx.sh makes of the committed .cu: each .ptx names its source and the
/// SHA-256 of the source and the shared header, so an edited .cu without a rebuild fails here (clang is not needed
/// to check). And every kernel the C# ops launch is an entry of the PTX they load.
/// </summary>
[Trait("tier", "unit")]
public class PtxBuildTests
{
    static readonly string[] Sources =
    [
        "src/Kernels/Cuda/rms_norm.cu", "src/Kernels/Cuda/rope.cu", "src/Kernels/Cuda/glu.cu", "src/Kernels/Cuda/adamw.cu",
        "src/Kernels/Cuda/dropout.cu", "src/Kernels/Cuda/cross_entropy.cu", "src/Kernels/Cuda/embedding.cu",
        "src/Quant/Kernels/nf4_dequant.cu",
        "src/Quant/Kernels/ternary_matmul.cu",   // launched by TernaryCudaKernel once it passed its self-check on the device
    ];

    [Fact]
    public void Every_cu_source_has_a_ptx_built_from_exactly_it()
    {
        var found = Directory.GetFiles(Path.Combine(Paths.RepoRoot, "src"), "*.cu", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(Paths.RepoRoot, f).Replace('\\', '/')).OrderBy(f => f).ToArray();
        Assert.Equal(Sources.OrderBy(f => f), found);
        var header = File.ReadAllText(Path.Combine(Paths.RepoRoot, "src/Kernels/Cuda/qln_cuda.h"));
        foreach (var cu in Sources)
        {
            var source = File.ReadAllText(Path.Combine(Paths.RepoRoot, cu));
            var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes((source + header).Replace("\r", ""))));
            var ptxPath = Path.Combine(Paths.RepoRoot, Path.ChangeExtension(cu, ".ptx"));
            Assert.True(File.Exists(ptxPath), $"{cu}: no .ptx beside it (run scripts/build_ptx.sh)");
            var firstLine = File.ReadLines(ptxPath).First();
            Assert.True(firstLine == $"// qln-source: {cu["src/".Length..]} sha256 {hash} (scripts/build_ptx.sh)",
                $"{ptxPath} was not built from the current {cu} and qln_cuda.h (run scripts/build_ptx.sh): {firstLine}");
        }
    }

    public static TheoryData<string, string> Launched() => new()
    {
        { "src/Kernels/Cuda/rms_norm.ptx", string.Join(",", FusedRmsNorm.KernelNames) },
        { "src/Kernels/Cuda/rope.ptx", string.Join(",", FusedRope.KernelNames) },
        { "src/Kernels/Cuda/glu.ptx", string.Join(",", FusedGlu.KernelNames) },
        { "src/Kernels/Cuda/adamw.ptx", string.Join(",", FusedAdamW.KernelNames) },
        { "src/Kernels/Cuda/dropout.ptx", string.Join(",", FusedDropout.KernelNames) },
        { "src/Kernels/Cuda/cross_entropy.ptx", string.Join(",", FusedCrossEntropy.KernelNames) },
        { "src/Kernels/Cuda/embedding.ptx", string.Join(",", HostEmbeddingGather.KernelNames) },
        { "src/Quant/Kernels/nf4_dequant.ptx", string.Join(",", FourBitCudaKernel.KernelNames) },
        { "src/Quant/Kernels/ternary_matmul.ptx", string.Join(",", TernaryCudaKernel.KernelNames) },
    };

    [Theory]
    [MemberData(nameof(Launched))]
    public void Every_kernel_an_op_launches_is_an_entry_of_its_ptx(string ptx, string names)
    {
        var text = File.ReadAllText(Path.Combine(Paths.RepoRoot, ptx));
        var entries = Regex.Matches(text, @"^\.visible \.entry (\w+)\(", RegexOptions.Multiline).Select(m => m.Groups[1].Value).ToHashSet();
        var launched = names.Split(',');
        Assert.NotEmpty(launched);
        foreach (var name in launched) Assert.True(entries.Contains(name), $"{ptx} has no entry {name} (entries: {string.Join(", ", entries)})");
        Assert.Equal(entries.Count, launched.Distinct().Count()); // and no entry goes unused
    }

    [Fact]
    public void Every_ptx_is_embedded_in_the_assembly_that_loads_it()
    {
        var kernels = typeof(FusedKernels).Assembly;
        foreach (var file in new[] { "rms_norm.ptx", "rope.ptx", "glu.ptx", "adamw.ptx", "dropout.ptx", "cross_entropy.ptx", "embedding.ptx" })
            Assert.True(QLoraNet.Kernels.Cuda.PtxModule.IsEmbedded(kernels, file), file);
        Assert.True(FourBitCudaKernel.IsEmbedded);
        Assert.True(TernaryCudaKernel.IsEmbedded);
    }
}
