using System.CommandLine;
using Microsoft.Extensions.AI;
using QLoraNet.Quant;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;
using ChatMessage = Microsoft.Extensions.AI.ChatMessage;

namespace QLoraNet.Cli;

/// <summary>
/// `chat`: an interactive conversation with a model (+ adapter) through its chat template, the natural way to try a
/// fine-tune. Answers stream as they are generated. Lines starting with / are commands: /system TEXT (set the system
/// prompt), /reset (forget the conversation), /exit. Ctrl-C stops the current answer, not the session. The conversation
/// is kept whole; what does not fit the model's context is dropped oldest turn first by the chat client
/// (<see cref="QLoraNetChatClient"/>, the Microsoft.Extensions.AI IChatClient this verb runs on).
/// </summary>
public static class ChatCommand
{
    public static Command Create(TextWriter stdout, TextReader? stdin = null)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model directory", Required = true };
        var adapter = new Option<string?>("--adapter") { Description = "peft LoRA adapter directory to apply (e.g. runs/quickstart/final)" };
        var quantization = new Option<string>("--quantization") { Description = $"base format, quantized on load (QLoRA adapters: nf4-dq): {BaseFormats.Syntax}", DefaultValueFactory = _ => "none" };
        var device = new Option<string>("--device") { Description = "cpu | cuda | auto", DefaultValueFactory = _ => "auto" };
        var dtype = new Option<string?>("--dtype") { Description = "compute dtype fp32 | bf16 (default: fp32 on cpu, bf16 on cuda)" };
        var template = new Option<string>("--template") { Description = $"chat template: {ChatTemplates.Choices} (auto: the model's own)", DefaultValueFactory = _ => "auto" };
        var system = new Option<string?>("--system") { Description = "system prompt to start with" };
        var maxNewTokens = new Option<int>("--max-new-tokens") { Description = "longest answer, in tokens", DefaultValueFactory = _ => 256 };
        var temperature = new Option<double>("--temperature") { Description = "0 = greedy; otherwise sample from softmax(logits / T)", DefaultValueFactory = _ => 0.0 };
        var topP = new Option<double>("--top-p") { Description = "nucleus sampling mass", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<long>("--seed") { Description = "seed of the sampling generator", DefaultValueFactory = _ => 0L };
        device.AcceptOnlyFromAmong("auto", "cpu", "cuda");
        dtype.AcceptOnlyFromAmong("fp32", "bf16");
        template.AcceptOnlyFromAmong(YamlNames.Choices<TemplateKind>().ToArray());

        var cmd = new Command("chat", "chat with a model (+ adapter) in the terminal: /system TEXT, /reset, /exit; Ctrl-C stops an answer");
        foreach (var o in new Option[] { model, adapter, quantization, device, dtype, template, system, maxNewTokens, temperature, topP, seed }) cmd.Options.Add(o);
        cmd.SetAction(parsed =>
        {
            var input = stdin ?? Console.In;
            LibTorchProbe.EnsureLoaded();
            using var lm = LanguageModel.Load(parsed.GetValue(model)!, new LanguageModelOptions
            {
                AdapterDirectory = parsed.GetValue(adapter), BaseFormat = parsed.GetValue(quantization)!, Device = parsed.GetValue(device)!,
                ComputeDType = parsed.GetValue(dtype), ChatTemplate = parsed.GetValue(template)!,
            });
            using var client = lm.AsChatClient();
            var options = new ChatOptions
            {
                MaxOutputTokens = parsed.GetValue(maxNewTokens), Temperature = (float)parsed.GetValue(temperature),
                TopP = (float)parsed.GetValue(topP), Seed = parsed.GetValue(seed),
            };
            return new ChatSession(client, options, parsed.GetValue(system), input, stdout).Run();
        });
        return cmd;
    }
}

/// <summary>The read-answer loop of <see cref="ChatCommand"/>.</summary>
sealed class ChatSession(IChatClient client, ChatOptions options, string? system, TextReader input, TextWriter output)
{
    readonly List<ChatMessage> _history = [];
    readonly bool _interactive = ReferenceEquals(input, Console.In) && !Console.IsInputRedirected;
    CancellationTokenSource? _answer;

    public int Run()
    {
        if (_interactive) output.WriteLine("chat: /system TEXT sets the system prompt, /reset forgets, /exit quits; Ctrl-C stops an answer");
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            if (_answer is { } a) { e.Cancel = true; a.Cancel(); }   // at the prompt, Ctrl-C ends the process as usual
        };
        Console.CancelKeyPress += onCancel;
        try
        {
            while (true)
            {
                if (_interactive) output.Write("> ");
                string? line = input.ReadLine();
                if (line is null || line.Trim() == "/exit") return 0;
                if (line.Trim().Length == 0) continue;
                if (Command(line.Trim())) continue;
                Answer(line);
            }
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    /// <summary>Handles a /command; false when the line is a message.</summary>
    bool Command(string line)
    {
        if (line == "/reset") { _history.Clear(); output.WriteLine("(conversation cleared)"); return true; }
        if (line == "/system" || line.StartsWith("/system ", StringComparison.Ordinal))
        {
            string text = line.Length > "/system".Length ? line["/system ".Length..].Trim() : "";
            system = text.Length > 0 ? text : null;
            output.WriteLine(system is null ? "(system prompt removed)" : "(system prompt set)");
            return true;
        }
        if (line.StartsWith('/') && !line.StartsWith("//", StringComparison.Ordinal))
        {
            output.WriteLine($"(unknown command {line.Split(' ')[0]}: use /system TEXT, /reset, /exit; start a message with // to send a leading /)");
            return true;
        }
        return false;
    }

    void Answer(string line)
    {
        string message = line.StartsWith("//", StringComparison.Ordinal) ? line[1..] : line;
        var conversation = new List<ChatMessage>();
        if (system != null) conversation.Add(new ChatMessage(ChatRole.System, system));
        conversation.AddRange(_history);
        conversation.Add(new ChatMessage(ChatRole.User, message));
        var reply = new System.Text.StringBuilder();
        using var answer = new CancellationTokenSource();
        _answer = answer;
        try
        {
            var stream = client.GetStreamingResponseAsync(conversation, options, answer.Token).GetAsyncEnumerator(answer.Token);
            try
            {
                while (stream.MoveNextAsync().AsTask().GetAwaiter().GetResult())
                {
                    output.Write(stream.Current.Text);
                    output.Flush();
                    reply.Append(stream.Current.Text);
                }
            }
            finally { stream.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
            output.WriteLine();
        }
        catch (OperationCanceledException)
        {
            output.WriteLine(" (stopped)");
        }
        finally { _answer = null; }
        _history.Add(new ChatMessage(ChatRole.User, message));
        _history.Add(new ChatMessage(ChatRole.Assistant, reply.ToString()));
    }
}
