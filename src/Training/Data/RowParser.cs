using System.Text.Json;
using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// Turns one row (a JSONL object or a CSV record, seen through <see cref="Row"/>) into a <see cref="RawExample"/>
/// of the configured format, checking what the format needs. Throws <see cref="BadRowException"/> naming the row
/// and the fields it does have. Chat rows must be: an optional leading system message, then user and assistant
/// messages alternating, ending with the assistant (Meta's Llama-2 chat rule; a trailing user turn has nothing to learn).
/// Preference rows (TRL's DPO format) hold a prompt (text, or messages ending with the user's) and a chosen and a
/// rejected answer (text, or a list whose last message is the assistant's).
/// </summary>
public static class RowParser
{
    /// <summary>A row's fields by name: strings, and for chat the messages array (JSON; in CSV a JSON-valued cell).</summary>
    public interface Row
    {
        string Origin { get; }
        IReadOnlyList<string> FieldNames { get; }
        string? String(string name);
        JsonElement? Json(string name);
    }

    public static RawExample Parse(Row row, DataFormat format, ColumnMapping columns) => format switch
    {
        DataFormat.Completion => new CompletionExample(row.Origin, Required(row, columns.Text)),
        DataFormat.Instruction => new InstructionExample(row.Origin, Required(row, columns.Instruction),
            row.String(columns.Input) ?? "", Required(row, columns.Output), NullIfEmpty(row.String(columns.System))),
        DataFormat.Preference => ParsePreference(row, columns),
        _ => ParseChat(row, columns),
    };

    static PreferenceExample ParsePreference(Row row, ColumnMapping columns)
    {
        string? system = NullIfEmpty(row.String(columns.System));
        var context = new List<ChatTurn>();
        string prompt;
        if (MessageList(row, columns.Prompt) is { } messages)
        {
            var list = Messages(row, messages);
            int i = 0;
            if (list.Count > 0 && list[0].Role == "system") { system = list[0].Content; i = 1; }
            for (; i + 1 < list.Count; i += 2)
            {
                if (list[i].Role != "user" || list[i + 1].Role != "assistant")
                    throw new BadRowException($"{row.Origin}: '{columns.Prompt}' messages must be [system], user, assistant, ..., user");
                context.Add(new ChatTurn(list[i].Content, list[i + 1].Content));
            }
            if (i != list.Count - 1 || list[i].Role != "user")
                throw new BadRowException($"{row.Origin}: '{columns.Prompt}' messages must end with the user message the answers reply to");
            prompt = list[i].Content;
        }
        else prompt = Required(row, columns.Prompt);
        return new PreferenceExample(row.Origin, system, context, prompt, Answer(row, columns.Chosen), Answer(row, columns.Rejected));
    }

    /// <summary>An answer of a preference row: text, or a list of messages whose last is the assistant's.</summary>
    static string Answer(Row row, string name)
    {
        if (MessageList(row, name) is { } messages)
        {
            var list = Messages(row, messages);
            if (list.Count == 0 || list[^1].Role != "assistant")
                throw new BadRowException($"{row.Origin}: '{name}' must be the answer's text or messages ending with the assistant's");
            return list[^1].Content.Trim().Length > 0 ? list[^1].Content : throw Missing(row, name, "the answer's text");
        }
        return Required(row, name);
    }

    /// <summary>The field as a list of messages when it holds one (a JSON array; in CSV, a cell holding one), else
    /// null: the field is text (a CSV cell such as "[INST] ..." that is not JSON stays text).</summary>
    static JsonElement? MessageList(Row row, string name)
    {
        if (row.String(name) is { } text && !text.TrimStart().StartsWith('[')) return null;
        try
        {
            return row.Json(name) is { ValueKind: JsonValueKind.Array } list ? list : null;
        }
        catch (BadRowException)
        {
            return null;
        }
    }

    static List<(string Role, string Content)> Messages(Row row, JsonElement messages)
    {
        var list = new List<(string Role, string Content)>();
        foreach (var m in messages.EnumerateArray())
        {
            if (m.ValueKind != JsonValueKind.Object
                || !m.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String
                || !m.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
                throw new BadRowException($"{row.Origin}: each message must be {{\"role\": ..., \"content\": \"...\"}}; got {Clip(m.GetRawText())}");
            list.Add((role.GetString()!, content.GetString()!));
        }
        return list;
    }

    static ChatExample ParseChat(Row row, ColumnMapping columns)
    {
        var json = row.Json(columns.Messages);
        if (json is not { ValueKind: JsonValueKind.Array } messages)
            throw Missing(row, columns.Messages, "a list of {role, content} messages");
        var list = Messages(row, messages);

        string? system = null;
        int i = 0;
        if (list.Count > 0 && list[0].Role == "system") { system = list[0].Content; i = 1; }
        var turns = new List<ChatTurn>();
        for (; i < list.Count; i += 2)
        {
            if (list[i].Role != "user")
                throw Order(row, $"message {i + 1} has role {QLoraNet.Formats.SafeText.Quote(list[i].Role, 30)} where 'user' was expected");
            if (i + 1 >= list.Count)
                throw Order(row, "the conversation ends with a user message; it must end with the assistant's reply");
            if (list[i + 1].Role != "assistant")
                throw Order(row, $"message {i + 2} has role {QLoraNet.Formats.SafeText.Quote(list[i + 1].Role, 30)} where 'assistant' was expected");
            turns.Add(new ChatTurn(list[i].Content, list[i + 1].Content));
        }
        if (turns.Count == 0) throw Order(row, "no user/assistant turn");
        return new ChatExample(row.Origin, system, turns);
    }

    static string Required(Row row, string name) =>
        row.String(name) is { } s && s.Trim().Length > 0 ? s : throw Missing(row, name, "text");

    static BadRowException Missing(Row row, string name, string what) =>
        new($"{row.Origin}: missing or empty field '{name}' ({what}); the row has: {QLoraNet.Formats.SafeText.Clip(string.Join(", ", row.FieldNames), 200)}");

    static BadRowException Order(Row row, string why) =>
        new($"{row.Origin}: {why}; chat rows are [system], user, assistant, user, assistant, ...");

    static string? NullIfEmpty(string? s) => string.IsNullOrWhiteSpace(s) ? null : s;

    static string Clip(string s) => QLoraNet.Formats.SafeText.Clip(s, 60);
}
