using System.CommandLine;
using System.Text;
using System.Text.Json;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;

namespace QLoraNet.Cli;

/// <summary>
/// `tokenize`: what training sees of a text or a conversation, with the model's own tokenizer and chat template (the
/// weights are not read). <c>--text</c> gives the ids of <c>tokenizer(text)</c> (default special tokens), trained as a
/// completion row is (every token but the first); <c>--messages</c> renders a JSON conversation with the template and
/// marks the tokens that carry loss in training (assistant turns and their end-of-turn token). Output: the pieces with
/// the trained ones highlighted (green on a terminal, in [brackets] otherwise, like axolotl's preprocess debug view),
/// or <c>{"ids": [...], "trained": [...]}</c> with --json.
/// </summary>
public static class TokenizeCommand
{
    const long MaxMessagesBytes = 16L << 20;

    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model directory (tokenizer.model or tokenizer.json, tokenizer_config.json)", Required = true };
        var text = new Option<string?>("--text") { Description = "text to tokenize" };
        var messages = new Option<string?>("--messages") { Description = "JSON file: a list of {role, content} messages, or {\"messages\": [...]}" };
        var template = new Option<string>("--template") { Description = $"chat template: {ChatTemplates.Choices} (auto: the model's own)", DefaultValueFactory = _ => "auto" };
        var systemRole = new Option<string>("--system-role") { Description = "native | fold: a system message kept, or folded into the first user turn", DefaultValueFactory = _ => "native" };
        var generationPrompt = new Option<bool>("--generation-prompt") { Description = "end with the header of an assistant turn, as a prompt to generate from" };
        var json = new Option<bool>("--json") { Description = "print {\"ids\": [...], \"trained\": [...]} as one JSON line" };
        template.AcceptOnlyFromAmong(YamlNames.Choices<TemplateKind>().ToArray());
        systemRole.AcceptOnlyFromAmong(YamlNames.Choices<SystemRole>().ToArray());

        var cmd = new Command("tokenize", "show the token ids (and trained positions) of a text or a chat conversation");
        foreach (var o in new Option[] { model, text, messages, template, systemRole, generationPrompt, json }) cmd.Options.Add(o);
        cmd.SetAction(parsed =>
        {
            string dir = parsed.GetValue(model)!;
            if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"model directory '{dir}' does not exist");
            string? textValue = parsed.GetValue(text), messagesFile = parsed.GetValue(messages);
            if ((textValue == null) == (messagesFile == null)) throw new ArgumentException("give --text TEXT or --messages FILE.json (one of them)");
            var tokenizer = TextTokenizers.Load(dir);

            List<int> ids;
            List<bool> trained;
            string what;
            if (textValue != null)
            {
                ids = tokenizer.Encode(textValue).ToList();
                trained = ids.Select((_, k) => k > 0).ToList();
                what = "text";
            }
            else
            {
                YamlNames.TryParse(parsed.GetValue(template)!, out TemplateKind kind);
                YamlNames.TryParse(parsed.GetValue(systemRole)!, out SystemRole role);
                var chat = ChatTemplates.Resolve(kind, tokenizer, TokenizerConfigJson.Load(dir))
                    ?? throw new ArgumentException("--template alpaca renders instruction rows only; choose a chat template");
                var conversation = ReadMessages(messagesFile!);
                ChatMessage.CheckOrder(conversation, messagesFile!, allowTrailingUser: true);
                var segments = chat.Render(ChatTemplates.ApplySystemRole(conversation, chat, role, messagesFile!), parsed.GetValue(generationPrompt));
                (ids, trained) = ExampleEncoder.Tokenize(tokenizer, segments, chat.WholeText);
                if (trained.Count > 0) trained[0] = false;                 // label[0] never counts (shifted loss)
                what = $"template {YamlNames.Of(chat.Kind)}";
            }

            if (parsed.GetValue(json))
                stdout.WriteLine($"{{\"ids\": [{string.Join(", ", ids)}], \"trained\": [{string.Join(", ", trained.Select(t => t ? "true" : "false"))}]}}");
            else
                WritePieces(stdout, tokenizer, ids, trained, what, color: ReferenceEquals(stdout, Console.Out) && !Console.IsOutputRedirected
                    && Environment.GetEnvironmentVariable("NO_COLOR") is null or "");
            return 0;
        });
        return cmd;
    }

    /// <summary>A list of {role, content}, or an object holding one under "messages".</summary>
    static List<ChatMessage> ReadMessages(string path)
    {
        using var doc = BoundedJson.Read(path, MaxMessagesBytes, "messages file");
        var root = doc.RootElement;
        if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("messages", out var inner)) root = inner;
        if (root.ValueKind != JsonValueKind.Array) throw new InvalidDataException($"{path}: expected a list of {{\"role\": ..., \"content\": ...}} messages (or {{\"messages\": [...]}})");
        var list = new List<ChatMessage>();
        foreach (var m in root.EnumerateArray())
        {
            if (m.ValueKind != JsonValueKind.Object
                || !m.TryGetProperty("role", out var r) || r.ValueKind != JsonValueKind.String
                || !m.TryGetProperty("content", out var c) || c.ValueKind != JsonValueKind.String)
                throw new InvalidDataException($"{path}: message {list.Count + 1} must be {{\"role\": \"user\"|\"assistant\"|\"system\", \"content\": \"...\"}}");
            list.Add(new ChatMessage(r.GetString()!, c.GetString()!));
        }
        return list;
    }

    /// <summary>Summary line, the pieces separated by '|' (trained ones green or bracketed), then the ids.</summary>
    static void WritePieces(TextWriter stdout, ITextTokenizer tokenizer, List<int> ids, List<bool> trained, string what, bool color)
    {
        stdout.WriteLine($"{ids.Count} tokens, {trained.Count(t => t)} trained ({what}); trained pieces are {(color ? "green" : "in [brackets]")}");
        var sb = new StringBuilder();
        for (int k = 0; k < ids.Count; k++)
        {
            if (k > 0) sb.Append(color ? "\u001b[2m|\u001b[0m" : "|");
            string piece = Visible(tokenizer.PieceText(ids[k]));
            sb.Append(!trained[k] ? piece : color ? $"\u001b[32m{piece}\u001b[0m" : $"[{piece}]");
        }
        stdout.WriteLine(sb.ToString());
        stdout.WriteLine($"ids: {string.Join(" ", ids)}");
    }

    static string Visible(string piece) => piece.Replace("\\", "\\\\").Replace("\n", "\\n").Replace("\r", "\\r").Replace("\t", "\\t");
}
