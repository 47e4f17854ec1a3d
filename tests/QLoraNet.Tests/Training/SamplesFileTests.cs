using QLoraNet.Training.Trainer;

namespace QLoraNet.Tests.Training;

/// <summary>samples.jsonl as a resume reads it: bounded and validated like every reader of a file from disk (issue 11).</summary>
[Trait("tier", "unit")]
public class SamplesFileTests
{
    static string Line(int step, string prompt = "Hi", string completion = "there") =>
        $"{{\"step\":{step},\"prompt\":\"{prompt}\",\"completion\":\"{completion}\"}}";

    static string Error(TempDir tmp, string content)
    {
        File.WriteAllText(tmp[SamplesFile.FileName], content);
        return ErrorOf(tmp);
    }

    static string ErrorOf(TempDir tmp) => OneLineError.Of(tmp[SamplesFile.FileName], () => SamplesFile.Read(tmp[SamplesFile.FileName]));

    [Fact]
    public void What_the_trainer_appends_reads_back_and_a_resume_keeps_the_steps_up_to_its_checkpoint()
    {
        using var tmp = Paths.Temp();
        var file = new SamplesFile(tmp[SamplesFile.FileName], 0);
        file.Append([new SampleGeneration(0, "a, \"quoted\"\nprompt", "x"), new SampleGeneration(2, "b", "y")]);
        file.Append([new SampleGeneration(4, "c", "z")]);
        Assert.Equal([0, 2, 4], SamplesFile.Read(file.Path).Select(s => s.Step));
        Assert.Equal("a, \"quoted\"\nprompt", SamplesFile.Read(file.Path)[0].Prompt);

        _ = new SamplesFile(file.Path, keepThroughStep: 2);
        Assert.Equal([0, 2], SamplesFile.Read(file.Path).Select(s => s.Step));
    }

    [Fact]
    public void A_line_cut_off_by_a_kill_during_an_append_is_dropped()
    {
        using var tmp = Paths.Temp();
        File.WriteAllText(tmp[SamplesFile.FileName], $"{Line(0)}\n{Line(2)}\n{{\"step\":4,\"prom");
        Assert.Equal([0, 2], SamplesFile.Read(tmp[SamplesFile.FileName]).Select(s => s.Step));
        _ = new SamplesFile(tmp[SamplesFile.FileName], keepThroughStep: 2); // the resume rewrites it whole
        Assert.EndsWith("\n", File.ReadAllText(tmp[SamplesFile.FileName]));
    }

    [Fact]
    public void Damaged_lines_are_one_line_errors_naming_the_line()
    {
        using var tmp = Paths.Temp();
        Assert.Contains(":2: not valid JSON", Error(tmp, $"{Line(0)}\n{{\"step\":2,\n{Line(4)}\n"));
        Assert.Contains(":1: expected {\"step\": N, \"prompt\"", Error(tmp, "{\"step\":\"two\",\"prompt\":\"a\",\"completion\":\"b\"}\n"));
        Assert.Contains(":1: expected", Error(tmp, "[1,2]\n"));
        // A whole final line without its newline is still checked: only a partial record counts as cut off.
        Assert.Contains(":1: expected", Error(tmp, "{\"step\":-1,\"prompt\":\"a\",\"completion\":\"b\"}"));
        byte[] garbage = [.. Enumerable.Repeat<byte[]>([0xFF, 0x00, 0x80, 0x41], 1000).SelectMany(b => b)]; // binary, no newline
        File.WriteAllBytes(tmp[SamplesFile.FileName], [.. System.Text.Encoding.UTF8.GetBytes(Line(0) + "\n"), .. garbage, (byte)'\n']);
        Assert.Contains(":2: not valid UTF-8", ErrorOf(tmp));
    }

    [Fact]
    public void The_file_and_its_lines_are_bounded_before_anything_is_read_into_memory()
    {
        using var tmp = Paths.Temp();
        string path = tmp[SamplesFile.FileName];
        using (var f = File.Create(path)) f.SetLength(SamplesFile.MaxBytes + 1); // sparse: no disk used
        Assert.Contains($"{SamplesFile.MaxBytes + 1} bytes is more than the {SamplesFile.MaxBytes}-byte limit for a samples file", ErrorOf(tmp));

        using (var f = File.Create(path)) f.SetLength(SamplesFile.MaxLineBytes + 2); // zeros, one endless line
        Assert.Contains($":1: line longer than {SamplesFile.MaxLineBytes} bytes", ErrorOf(tmp));

        File.Delete(path);
        Directory.CreateDirectory(path);
        Assert.Contains("is a directory", ErrorOf(tmp));
    }
}
