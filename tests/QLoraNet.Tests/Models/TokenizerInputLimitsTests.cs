using System.Diagnostics;
using System.Text.Json.Nodes;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;

namespace QLoraNet.Tests.Models;

/// <summary>
/// The readers main gained with the tokenizer and chat-template work, held to issue 11's rules: no input hangs
/// (a FIFO, a regex that backtracks without end), and errors are one line naming the file.
/// </summary>
[Trait("tier", "unit")]
public class TokenizerInputLimitsTests
{
    static TempDir Llama3Copy()
    {
        var tmp = Paths.Temp();
        foreach (var f in new[] { TokenizerJson.FileName, TokenizerConfigJson.FileName })
            File.Copy(Path.Combine(Paths.Family("llama3"), f), tmp[f]);
        return tmp;
    }

    [Fact]
    public void A_split_regex_that_backtracks_without_end_is_an_error_naming_the_file_not_a_hang()
    {
        using var tmp = Llama3Copy();
        var json = JsonNode.Parse(File.ReadAllText(tmp[TokenizerJson.FileName]))!;
        json["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"]!["Regex"] = "(a+)+b";   // exponential on "aaa...c"
        File.WriteAllText(tmp[TokenizerJson.FileName], json.ToJsonString());
        var tokenizer = TextTokenizers.Load(tmp.Path);
        Assert.NotEmpty(tokenizer.Encode("ab ab"));   // the pattern itself runs

        var message = Bounded.Within(TimeSpan.FromMinutes(2), "a backtracking pattern hung the tokenizer",
            () => Assert.Throws<InvalidDataException>(() => tokenizer.Encode(new string('a', 64) + "c"))).Message;
        Assert.StartsWith(tmp[TokenizerJson.FileName], message);
        Assert.Contains("catastrophic backtracking", message);
        Assert.DoesNotContain("\n", message);
    }

    [Fact]
    public void A_split_pattern_longer_than_any_tokenizer_writes_is_refused_at_load()
    {
        using var tmp = Llama3Copy();
        var json = JsonNode.Parse(File.ReadAllText(tmp[TokenizerJson.FileName]))!;
        json["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"]!["Regex"] = string.Concat(Enumerable.Repeat("(a|b)", 2000));
        File.WriteAllText(tmp[TokenizerJson.FileName], json.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => TextTokenizers.Load(tmp.Path));
        Assert.Contains("Split pattern of 10000 characters", e.Message);
    }

    [Theory]
    [InlineData(TokenizerJson.FileName)]
    [InlineData(TokenizerConfigJson.FileName)]
    [InlineData(TokenizerConfigJson.ChatTemplateFileName)]
    public void Tokenizer_files_that_are_fifos_are_refused_at_once(string file)
    {
        if (OperatingSystem.IsWindows()) return;
        using var tmp = Llama3Copy();
        File.Delete(tmp[file]);
        using (var p = Process.Start("mkfifo", tmp[file])) p.WaitForExit();
        var error = Bounded.Within(TimeSpan.FromSeconds(30), $"a FIFO {file} blocked the load",
            () => Assert.ThrowsAny<Exception>(() => { TextTokenizers.Load(tmp.Path); TokenizerConfigJson.Load(tmp.Path); }));
        Assert.IsType<InvalidDataException>(error);
        Assert.Contains("FIFO", error.Message);
    }

    [Fact]
    public void An_adapters_provenance_file_is_bounded_and_its_errors_are_one_line()
    {
        using var tmp = Paths.Temp();
        string path = tmp[AdapterProvenance.FileName];
        string Error(string content)
        {
            File.WriteAllText(path, content);
            return OneLineError.Of(path, () => AdapterProvenance.Load(tmp.Path));
        }
        Assert.Contains("expected {\"base_format\"", Error("[1, 2]"));
        Assert.Contains("expected {\"base_format\"", Error("{\"base_format\": 4}"));
        Assert.Contains("base_format 'nf9\\x1b[31m'", Error("{\"base_format\": \"nf9\\u001b[31m\"}"));
        Assert.Contains("not valid JSON", Error("{\"base_format\": "));
        Assert.Contains("limit", Error("{\"base_format\": \"nf4\", \"pad\": \"" + new string('x', 100_000) + "\"}"));
        if (OperatingSystem.IsWindows()) return;
        File.Delete(path);
        using (var p = Process.Start("mkfifo", path)) p.WaitForExit();
        var error = Bounded.Within(TimeSpan.FromSeconds(30), "a FIFO qloranet.json blocked",
            () => Assert.Throws<InvalidDataException>(() => AdapterProvenance.Load(tmp.Path)));
        Assert.Contains("FIFO", error.Message);
    }
}
