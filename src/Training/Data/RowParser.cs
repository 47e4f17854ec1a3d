using System.Text.Json;
using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// Turns one row (a JSONL object or a CSV record, seen through <see cref="Row"/>) into a <see cref="RawExample"/>
/// of the configured format, checking what the format needs. Throws <see cref="BadRowException"/> naming the row
/// and the fields it does have. Chat rows must be: an optional leading system message, then user and assistant
/// messages alternating, ending with the assistant (Meta's Llama-2 chat rule; a trailing user turn has nothing to learn).
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
        _ => ParseChat(row, columns),
    };

    static ChatExample ParseChat(Row row, ColumnMapping columns)
    {
        var json = row.Json(columns.Messages);
        if (json is not { ValueKind: JsonValueKind.Array } messages)
            throw Missing(row, columns.Messages, "a list of {role, content} messages");
        var list = new List<(string Role, string Content)>();
        foreach (var m in messages.EnumerateArray())
        {
            if (m.ValueKind != JsonValueKind.Object
                || !m.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String
                || !m.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
                throw new BadRowException($"{row.Origin}: each message must be {{\"role\": ..., \"content\": \"...\"}}; got {Clip(m.GetRawText())}");
            list.Add((role.GetString()!, content.GetString()!));
        }

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
