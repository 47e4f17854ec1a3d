using System.CommandLine;
using QLoraNet.Cli;

namespace QLoraNet.Tests.Cli;

/// <summary>The `chat` verb fed from a reader: answers, /system, /reset, unknown commands, /exit and end of input.</summary>
[Trait("tier", "e2e")]
public class ChatTests
{
    static (int Code, string Output) Chat(string input, params string[] extra)
    {
        var output = new StringWriter();
        var root = new RootCommand { ChatCommand.Create(output, new StringReader(input)) };
        string[] args = ["chat", "--model", Paths.TinyModel, "--device", "cpu", "--max-new-tokens", "6", .. extra];
        int code = root.Parse(args).Invoke(new InvocationConfiguration { Output = output, EnableDefaultExceptionHandler = false });
        return (code, output.ToString());
    }

    [Fact]
    public void Commands_and_answers_in_one_session()
    {
        var (code, output) = Chat("Hi\n/system Be brief\n/reset\n/bogus\n\n/system\n/exit\nnever read\n");
        Assert.Equal(0, code);
        // The answer to "Hi" (streamed, may hold newlines) ends with a newline; then one line per command; /exit ends
        // the session before the last line is read.
        const string commands = "(system prompt set)\n(conversation cleared)\n"
            + "(unknown command /bogus: use /system TEXT, /reset, /exit; start a message with // to send a leading /)\n(system prompt removed)\n";
        Assert.EndsWith(commands, output.Replace("\r\n", "\n"));
        string answer = output[..^commands.Length];
        Assert.True(answer.Length > 1 && answer.EndsWith('\n'), output);
    }

    [Fact]
    public void The_same_question_after_reset_gets_the_same_greedy_answer_as_in_a_new_session()
    {
        var (_, once) = Chat("Tell me about the whale\n");
        var (_, afterReset) = Chat("Hi\n/reset\nTell me about the whale\n");
        Assert.EndsWith("(conversation cleared)\n" + once, afterReset);
        Assert.True(afterReset.Length > once.Length + 24, afterReset);
    }

    [Fact]
    public void A_missing_model_is_a_one_line_error()
    {
        var (code, stdout, stderr) = CliRunner.Run("chat", "--model", "/nonexistent/model");
        Assert.Equal(1, code);
        Assert.Equal("error: model directory '/nonexistent/model' does not exist", stderr.TrimEnd());
        Assert.Equal("", stdout);
    }
}
