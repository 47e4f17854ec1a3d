using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// A chat format, rendered natively (no Jinja engine exists for .NET here): messages to segments, each marked
/// trained or masked. Two ways to tokenize the segments, by <see cref="WholeText"/>:
/// <list type="bullet">
/// <item>true: the segments' texts, special-token strings included ("&lt;|eot_id|&gt;"), are one text tokenized
/// once without added special tokens, exactly as Hugging Face's apply_chat_template(tokenize=True) does; a token is
/// trained when its first character lies in a trained segment (llama3, chatml, mistral-instruct, gemma);</item>
/// <item>false: each segment is a fresh input with BOS/EOS ids as its flags say (Meta's llama2-chat encoding, none).</item>
/// </list>
/// Only assistant turns and the end-of-turn token that closes them are trained (see each template for what that is).
/// </summary>
public interface IChatTemplate
{
    TemplateKind Kind { get; }

    bool WholeText { get; }

    /// <summary>False when the format has no system role (Gemma): a system message is refused or folded (data.system_role).</summary>
    bool SupportsSystem { get; }

    /// <summary>Token strings that end an assistant turn; generation stops at them (and at every EOS id).</summary>
    IReadOnlyList<string> EndOfTurnTokens { get; }

    /// <summary>
    /// The segments of <paramref name="messages"/> (order checked by the caller: [system], user, assistant, ...),
    /// followed by the header of an assistant turn when <paramref name="addGenerationPrompt"/>.
    /// </summary>
    IReadOnlyList<Segment> Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt);
}
