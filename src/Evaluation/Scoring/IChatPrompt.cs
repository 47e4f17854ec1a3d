namespace QLoraNet.Evaluation.Scoring;

/// <summary>
/// A chat format for the prompts of generative tasks, as lm-evaluation-harness's <c>--apply_chat_template</c> without
/// <c>--fewshot_as_multiturn</c>: the whole context (description, few-shot examples, the question) becomes one user
/// message, followed by the header of the assistant's turn, and the model generates the reply. Implemented above this
/// layer, where the chat templates live (the model's own, recognised from its files, or one named).
/// </summary>
public interface IChatPrompt
{
    /// <summary>The template's name, for the results' config.</summary>
    string Name { get; }

    /// <summary>Ids of <paramref name="userMessage"/> as one user turn plus the assistant header, as
    /// <c>apply_chat_template([{"role": "user", ...}], add_generation_prompt=True, tokenize=True)</c> gives them.</summary>
    IReadOnlyList<int> Encode(string userMessage);

    /// <summary>Tokens that end the assistant's turn (e.g. &lt;|eot_id|&gt;); generation stops at them as at EOS.</summary>
    IReadOnlyList<int> EndOfTurnIds { get; }
}
