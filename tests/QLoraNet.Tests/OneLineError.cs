namespace QLoraNet.Tests;

/// <summary>
/// The rule for a bad input file, checked in one place: reading it throws InvalidDataException whose message is one
/// line, starts with the file's path and holds no control character (so file content cannot forge terminal output).
/// </summary>
static class OneLineError
{
    /// <summary>The message of the error <paramref name="read"/> throws for the file at <paramref name="path"/>.</summary>
    public static string Of(string path, Action read)
    {
        var e = Assert.Throws<InvalidDataException>(read);
        Assert.StartsWith(path, e.Message);
        Assert.DoesNotContain("\n", e.Message);
        Assert.False(e.Message.Any(char.IsControl), e.Message);
        return e.Message;
    }
}
