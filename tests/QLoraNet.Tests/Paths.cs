namespace QLoraNet.Tests;

/// <summary>Repo-relative paths for tests: the tiny model and datasets committed in the repo.</summary>
public static class Paths
{
    public static string RepoRoot { get; } = FindRoot();
    public static string TinyModel => Path.Combine(RepoRoot, "models", "tiny-llama-sotu");

    /// <summary>A tiny model-family fixture with transformers references (tests/fixtures/families/NAME).</summary>
    public static string Family(string name) => Path.Combine(RepoRoot, "tests", "fixtures", "families", name);

    static string FindRoot()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d != null && !File.Exists(Path.Combine(d.FullName, "QLoraNet.sln"))) d = d.Parent;
        return d?.FullName ?? throw new InvalidOperationException("QLoraNet.sln not found above " + AppContext.BaseDirectory);
    }

    /// <summary>A fresh empty temp directory, deleted when disposed.</summary>
    public static TempDir Temp() => new();

    /// <summary>A temporary folder for files shared by a test class's cases (exports made once), deleted when the
    /// test process exits.</summary>
    public static TempDir TempForProcess()
    {
        var dir = Temp();
        AppDomain.CurrentDomain.ProcessExit += (_, _) => dir.Dispose();
        return dir;
    }
}

public sealed class TempDir : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "qln-test-" + Guid.NewGuid().ToString("N")[..12]);
    public TempDir() => Directory.CreateDirectory(Path);
    public string this[string name] => System.IO.Path.Combine(Path, name);
    public void Dispose() { try { Directory.Delete(Path, true); } catch { } }
}
