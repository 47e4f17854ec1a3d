namespace QLoraNet.Training.Data;

/// <summary>
/// One message of a conversation as the chat templates take it (the role/content dicts of Hugging Face's
/// apply_chat_template): role "system", "user" or "assistant".
/// </summary>
public sealed record ChatMessage(string Role, string Content)
{
    public const string System = "system", User = "user", Assistant = "assistant";

    /// <summary>
    /// Checks the order every template here needs: an optional system message first, then user and assistant
    /// alternating from a user message; the last may be a user message (a prompt to continue) when
    /// <paramref name="allowTrailingUser"/>. One-line error naming <paramref name="origin"/>.
    /// </summary>
    public static void CheckOrder(IReadOnlyList<ChatMessage> messages, string origin, bool allowTrailingUser)
    {
        int i = messages.Count > 0 && messages[0].Role == System ? 1 : 0;
        if (i == messages.Count) throw new InvalidDataException($"{origin}: no user message; a conversation is [system], user, assistant, user, ...");
        for (int k = i; k < messages.Count; k++)
        {
            string want = (k - i) % 2 == 0 ? User : Assistant;
            if (messages[k].Role != want)
                throw new InvalidDataException($"{origin}: message {k + 1} has role {QLoraNet.Formats.SafeText.Quote(messages[k].Role, 40)} where '{want}' was expected; a conversation is [system], user, assistant, user, ...");
        }
        if (!allowTrailingUser && messages[^1].Role != Assistant)
            throw new InvalidDataException($"{origin}: the conversation ends with a user message; it must end with the assistant's reply");
    }

    /// <summary>The messages of a parsed chat row (system first when it has one).</summary>
    public static IReadOnlyList<ChatMessage> Of(string? system, IReadOnlyList<ChatTurn> turns)
    {
        var list = new List<ChatMessage>(2 * turns.Count + 1);
        if (system != null) list.Add(new ChatMessage(System, system));
        foreach (var t in turns)
        {
            list.Add(new ChatMessage(User, t.User));
            list.Add(new ChatMessage(Assistant, t.Assistant));
        }
        return list;
    }
}
