using QLoraNet.Formats;

namespace QLoraNet.Tests.Formats;

/// <summary>Every publish of a file or directory goes through these: complete or not at all, no leftovers.</summary>
[Trait("tier", "unit")]
public class AtomicFileTests
{
    [Fact]
    public void A_failed_write_keeps_the_previous_file_and_leaves_no_temporary()
    {
        using var tmp = Paths.Temp();
        string path = tmp["a.txt"];
        AtomicFile.WriteAllText(path, "old");
        Assert.Throws<IOException>(() => AtomicFile.Write(path, s =>
        {
            s.Write("new, half"u8);
            throw new IOException("disk full");
        }));
        Assert.Equal("old", File.ReadAllText(path));
        Assert.Equal(new[] { path }, Directory.GetFileSystemEntries(tmp.Path));
        AtomicFile.WriteAllText(path, "new");
        Assert.Equal("new", File.ReadAllText(path));
        Assert.Equal(new[] { path }, Directory.GetFileSystemEntries(tmp.Path));
    }

    [Fact]
    public void A_directory_is_replaced_whole_or_not_at_all()
    {
        using var tmp = Paths.Temp();
        string dir = tmp["out"];
        AtomicDirectory.Write(dir, d => File.WriteAllText(Path.Combine(d, "one"), "1"));
        Assert.Throws<InvalidOperationException>(() => AtomicDirectory.Write(dir, d =>
        {
            File.WriteAllText(Path.Combine(d, "two"), "2");
            throw new InvalidOperationException("killed");
        }));
        Assert.Equal(new[] { "one" }, Directory.GetFiles(dir).Select(Path.GetFileName));
        AtomicDirectory.Write(dir, d => File.WriteAllText(Path.Combine(d, "two"), "2"));
        Assert.Equal(new[] { "two" }, Directory.GetFiles(dir).Select(Path.GetFileName));
        Assert.Equal(new[] { dir }, Directory.GetFileSystemEntries(tmp.Path));
    }

    [Fact]
    public void Temporary_names_are_hidden_siblings_recognised_as_leftovers()
    {
        string name = AtomicFile.TemporaryName("step-4");
        Assert.StartsWith(".step-4.tmp-", name);
        Assert.True(AtomicFile.IsTemporaryName(name));
        Assert.False(AtomicFile.IsTemporaryName("step-4"));
    }
}
