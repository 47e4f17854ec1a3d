using QLoraNet.Cli;

namespace QLoraNet.Tests.Cli;

/// <summary>Whatever the exception, the CLI prints one escaped, bounded line.</summary>
[Trait("tier", "unit")]
public class ErrorLineTests
{
    [Fact]
    public void A_native_libtorch_error_is_condensed_to_its_first_line()
    {
        var fake = new System.Runtime.InteropServices.ExternalException(
            "shape '[2147483647, 8]' is invalid\nException raised from infer_size at aten/x.cpp:42\n" + string.Concat(Enumerable.Repeat("frame #1: 0xdeadbeef in libtorch_cpu.so\n", 80)));
        Assert.Equal("libtorch: shape '[2147483647, 8]' is invalid", CliApp.ErrorLine(fake));
    }

    [Fact]
    public void Control_characters_are_escaped_and_long_messages_capped()
    {
        string line = CliApp.ErrorLine(new InvalidDataException("f.csv: bad \u001b[2J\u0007 value " + new string('x', 5000)));
        Assert.DoesNotContain("\u001b", line);
        Assert.Contains("\\x1b[2J\\x07", line);
        Assert.True(line.Length < CliApp.MaxErrorChars + 40, $"{line.Length}");
    }
}
