using System.Text.RegularExpressions;

namespace QLoraNet.Tests.Kernels;

/// <summary>
/// Every custom autograd function's backward in the product runs through <see cref="QLoraNet.Kernels.BackwardFailure"/>:
/// one that does not would kill the process on its first failure (TorchSharp cannot carry an exception out of the
/// native callback). A new custom function that forgets it fails here, before it ships (the overrides of
/// <see cref="QLoraNet.Kernels.CachelessFunction{T}"/>'s Backward, and its own backward, alike).
/// </summary>
[Trait("tier", "unit")]
public class BackwardGuardCoverageTests
{
    [Fact]
    public void Every_custom_backward_in_src_is_guarded()
    {
        var src = Path.Combine(Paths.RepoRoot, "src");
        var overrides = Directory.EnumerateFiles(src, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}"))
            .SelectMany(f => Regex.Matches(File.ReadAllText(f), @"override List<Tensor> [bB]ackward\([^)]*\)(?<body>[^;{]*)")
                .Select(m => (File: Path.GetRelativePath(src, f), Body: m.Groups["body"].Value)))
            .ToList();
        Assert.True(overrides.Count >= 10, $"found only {overrides.Count} custom backward overrides: the pattern no longer matches the code");
        var unguarded = overrides.Where(o => !o.Body.Contains("BackwardFailure.Guard(")).Select(o => o.File).ToList();
        Assert.True(unguarded.Count == 0, "custom backward without BackwardFailure.Guard in: " + string.Join(", ", unguarded));
    }
}
