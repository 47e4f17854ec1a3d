using System.Text.RegularExpressions;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// The registry of chat formats: <c>data.template</c> (or <c>--template</c>) names one, and <c>auto</c> (the default)
/// takes the template the checkpoint ships (tokenizer_config.json's chat_template or chat_template.jinja),
/// recognised by the markers of each family's Jinja source:
/// <list type="bullet">
/// <item>llama3: &lt;|start_header_id|&gt; and &lt;|eot_id|&gt; (Llama 3.1+ templates, which write a dated system block
/// and tool calls, are not rendered: name llama3 to use the plain format);</item>
/// <item>chatml: &lt;|im_start|&gt; and &lt;|im_end|&gt;, with the default system prompt the template writes when a
/// conversation has none (Qwen2/2.5), read from it;</item>
/// <item>mistral-instruct: [INST] without &lt;&lt;SYS&gt;&gt;, in the revision that writes " [INST] ";</item>
/// <item>llama2-chat: [INST] with &lt;&lt;SYS&gt;&gt;;</item>
/// <item>gemma: &lt;start_of_turn&gt; and &lt;end_of_turn&gt;.</item>
/// </list>
/// Anything else is an error naming the choices. A checkpoint without a template gets llama2-chat when its tokenizer is
/// SentencePiece (the behaviour before families), else the same error.
/// </summary>
public static class ChatTemplates
{
    /// <summary>The formats that render chat rows (alpaca renders instruction rows only).</summary>
    public static IReadOnlyList<TemplateKind> ChatKinds { get; } =
        [TemplateKind.Llama2Chat, TemplateKind.Llama3, TemplateKind.Chatml, TemplateKind.MistralInstruct, TemplateKind.Gemma, TemplateKind.None];

    /// <summary>The YAML spellings of every choice, for messages.</summary>
    public static string Choices => string.Join(", ", YamlNames.Choices<TemplateKind>());

    static readonly Regex ChatMlDefaultSystem = new(@"<\|im_start\|>system\\n([^'""{}<\\]+)<\|im_end\|>", RegexOptions.CultureInvariant);

    /// <summary>What a shipped Jinja template is: a kind (and ChatML's default system prompt), or why it is none.</summary>
    public sealed record Recognition(TemplateKind? Kind, string? DefaultSystem, string? Reason);

    public static Recognition Recognize(string jinja)
    {
        bool Has(string s) => jinja.Contains(s, StringComparison.Ordinal);
        if (Has("<|start_header_id|>") && Has("<|eot_id|>"))
            return Has("Cutting Knowledge Date") || Has("ipython") || Has("tools")
                ? new(null, null, "it is a Llama 3.1+ template (dated system block, tool calls), which is not rendered natively; name llama3 to use the plain Llama 3 format")
                : new(TemplateKind.Llama3, null, null);
        if (Has("<|im_start|>") && Has("<|im_end|>"))
            return new(TemplateKind.Chatml, ChatMlDefaultSystem.Match(jinja) is { Success: true } m ? m.Groups[1].Value : null, null);
        if (Has("<start_of_turn>") && Has("<end_of_turn>")) return new(TemplateKind.Gemma, null, null);
        if (Has("[INST]") && Has("[/INST]"))
        {
            if (Has("<<SYS>>")) return new(TemplateKind.Llama2Chat, null, null);
            if (Has("' [INST] '")) return new(TemplateKind.MistralInstruct, null, null);
            return new(null, null, "it is a Mistral template of another revision than the one rendered (\" [INST] \" after BOS); name mistral-instruct to use that one");
        }
        return new(null, null, "it matches none of the known families' templates");
    }

    /// <summary>
    /// The chat format for <paramref name="kind"/> with the tokenizer's special-token strings; null for alpaca (instruction
    /// rows only). <c>auto</c> resolves to the checkpoint's own template (see the class summary).
    /// </summary>
    public static IChatTemplate? Resolve(TemplateKind kind, ITextTokenizer tokenizer, TokenizerConfigJson config)
    {
        var shipped = config.ChatTemplate is { } jinja ? Recognize(jinja) : null;
        if (kind == TemplateKind.Auto)
        {
            if (shipped == null)
                return tokenizer is SentencePieceTextTokenizer ? new Llama2ChatTemplate()
                    : throw new InvalidDataException($"the model ships no chat template; set data.template (or --template) to one of {Choices}");
            kind = shipped.Kind ?? throw new InvalidDataException(
                $"{config.ChatTemplateSource}: the chat template is not one QLoraNet renders ({shipped.Reason}); set data.template (or --template) to one of {Choices}");
        }
        string bos = tokenizer.BosId is int b ? tokenizer.PieceText(b) : "";
        string eos = tokenizer.PieceText(tokenizer.EosId);
        return kind switch
        {
            TemplateKind.Llama2Chat => new Llama2ChatTemplate(),
            TemplateKind.Llama3 => new Llama3ChatTemplate(bos),
            TemplateKind.Chatml => new ChatMlTemplate(shipped?.Kind == TemplateKind.Chatml ? shipped.DefaultSystem : null),
            TemplateKind.MistralInstruct => new MistralInstructTemplate(bos, eos),
            TemplateKind.Gemma => new GemmaChatTemplate(bos),
            TemplateKind.None => new PlainChatTemplate(),
            TemplateKind.Alpaca => null,
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
    }

    /// <summary>The formats that need no tokenizer (llama2-chat, none; alpaca is null), for callers without a model.</summary>
    public static IChatTemplate? Builtin(TemplateKind kind) => kind switch
    {
        TemplateKind.Llama2Chat or TemplateKind.Auto => new Llama2ChatTemplate(),
        TemplateKind.None => new PlainChatTemplate(),
        TemplateKind.Alpaca => null,
        _ => throw new ArgumentException($"template '{YamlNames.Of(kind)}' needs the model's tokenizer to render"),
    };

    /// <summary>
    /// The messages of a conversation ready for <paramref name="template"/>: a system message kept, or folded into the
    /// first user turn ("{system}\n\n{user}") when <paramref name="role"/> is fold; refused for a template without a
    /// system role otherwise.
    /// </summary>
    public static IReadOnlyList<ChatMessage> ApplySystemRole(IReadOnlyList<ChatMessage> messages, IChatTemplate template, SystemRole role, string origin)
    {
        if (messages.Count == 0 || messages[0].Role != ChatMessage.System) return messages;
        if (role == SystemRole.Native)
            return template.SupportsSystem ? messages : throw new InvalidDataException(
                $"{origin}: template '{YamlNames.Of(template.Kind)}' has no system role and the conversation has a system message (or data.system_prompt is set); set data.system_role: fold to fold it into the first user turn");
        var rest = messages.Skip(1).ToList();
        if (rest.Count > 0) rest[0] = rest[0] with { Content = $"{messages[0].Content}\n\n{rest[0].Content}" };
        return rest;
    }
}
