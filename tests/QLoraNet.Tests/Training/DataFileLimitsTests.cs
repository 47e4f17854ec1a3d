using QLoraNet.Training.Config;
using QLoraNet.Training.Data;

namespace QLoraNet.Tests.Training;

/// <summary>Data files are streamed with bounds: an endless line or a device fails at once, naming file:line.</summary>
[Trait("tier", "unit")]
public sealed class DataFileLimitsTests : IDisposable
{
    readonly TempDir dir = Paths.Temp();

    public void Dispose() => dir.Dispose();

    static string ReadError(string path, DataFormat format = DataFormat.Completion)
    {
        var e = Assert.ThrowsAny<Exception>(() => ExampleFiles.Read([path], format, new ColumnMapping(), skipBadRows: false));
        Assert.IsType<InvalidDataException>(e);
        Assert.DoesNotContain("\n", e.Message);
        Assert.True(e.Message.Length < 700, e.Message);
        Assert.DoesNotMatch(@"[\x00-\x08\x0b-\x1f\x7f]", e.Message);
        return e.Message;
    }

    [Fact]
    public void One_endless_jsonl_line_fails_at_the_limit_naming_file_and_line()
    {
        string path = dir["t.jsonl"];
        using (var w = new StreamWriter(path))
        {
            w.WriteLine("{\"text\": \"fine\"}");
            var chunk = new string('a', 1 << 20);
            for (int i = 0; i < 17; i++) w.Write(chunk);   // 17 MiB, no newline
        }
        Assert.StartsWith($"{path}:2: line longer than {JsonlRows.MaxLineBytes} bytes", ReadError(path));
    }

    [Fact]
    public void A_jsonl_file_that_is_dev_zero_is_refused_without_reading_it()
    {
        if (OperatingSystem.IsWindows()) return;
        string path = dir["zero.jsonl"];
        File.CreateSymbolicLink(path, "/dev/zero");
        Assert.Contains("not a regular file (a character device)", ReadError(path));
    }

    [Fact]
    public void Invalid_utf8_and_duplicate_keys_in_jsonl_name_the_line()
    {
        string path = dir["t.jsonl"];
        File.WriteAllBytes(path, [.. "{\"text\": \"ok\"}\n{\"text\": \"x"u8, 0xff, 0xfe, .. "\"}\n"u8]);
        Assert.StartsWith($"{path}:2: not valid UTF-8", ReadError(path));
        File.WriteAllText(path, "{\"text\": \"a\", \"text\": \"b\"}\n");
        Assert.Contains($"{path}:1: not valid JSON (Duplicate property 'text'", ReadError(path));
    }

    [Fact]
    public void A_csv_of_binary_garbage_is_one_short_line_with_nothing_raw_echoed()
    {
        string path = dir["g.csv"];
        var rng = new Random(11);
        var bytes = new byte[4000];
        rng.NextBytes(bytes);
        File.WriteAllBytes(path, bytes);
        ReadError(path, DataFormat.Chat);
    }

    [Fact]
    public void A_csv_with_an_unclosed_quote_over_a_huge_file_fails_at_the_record_limit()
    {
        string path = dir["q.csv"];
        using (var w = new StreamWriter(path))
        {
            w.WriteLine("text");
            w.Write('"');
            var chunk = new string('x', 1 << 20);
            for (int i = 0; i < 20; i++) w.WriteLine(chunk);
        }
        Assert.StartsWith(path, ReadError(path));
    }
}
