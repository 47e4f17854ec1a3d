using System.Text.Json;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>One prompt to answer during training: what to show (the last user message) and the ids the model reads.</summary>
public sealed record SamplePrompt(string Text, IReadOnlyList<int> InputIds);

/// <summary>
/// <c>training.sample_prompts</c>: a list of user messages, or a file: <c>.txt</c> with one prompt a line (blank
/// lines skipped), or <c>.jsonl</c> with one object a line, either <c>{"prompt": "..."}</c> or chat
/// <c>{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}</c> ending with a user message.
/// Each is rendered with the data's template as a generation prompt (<see cref="GenerationPrompt"/>).
/// </summary>
public static class SamplePrompts
{
    public static IReadOnlyList<SamplePrompt> Load(IReadOnlyList<string>? inline, string? file, DataConfig data, ITextTokenizer tokenizer)
    {
        var examples = inline is not null
            ? inline.Select((p, i) => (p, GenerationPrompt.FromText($"training.sample_prompts[{i}]", p, data.Format))).ToList()
            : file is null ? [] : Read(file, data.Format);
        return examples.Select(e => new SamplePrompt(e.Item1, GenerationPrompt.Encode(GenerationPrompt.Render(e.Item2, data), tokenizer))).ToList();
    }

    const int MaxLineBytes = 1 << 20, MaxPrompts = 1000;

    static List<(string, RawExample)> Read(string file, DataFormat format)
    {
        var result = new List<(string, RawExample)>();
        // Bounded as the data files are: a regular file, lines of at most MaxLineBytes, strict UTF-8 (issue 11).
        foreach (var (line, text) in UserFile.ReadLines(file, MaxLineBytes, "sample prompts file"))
        {
            if (result.Count >= MaxPrompts)
                throw new InvalidDataException($"{file}:{line}: more than {MaxPrompts} sample prompts; each is generated at every sample step, so keep a few");
            if (text.Trim().Length == 0) continue;
            string origin = $"{file}:{line}";
            if (!file.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase))
            {
                result.Add((text.Trim(), GenerationPrompt.FromText(origin, text.Trim(), format)));
                continue;
            }
            result.Add(ParseJsonLine(origin, text, format));
        }
        if (result.Count == 0) throw new InvalidDataException($"{file}: no prompts (training.sample_prompts)");
        return result;
    }

    static (string, RawExample) ParseJsonLine(string origin, string text, DataFormat format)
    {
        JsonElement root;
        try { root = JsonDocument.Parse(text, UserFile.JsonOptions).RootElement; }
        catch (JsonException e) { throw new InvalidDataException($"{origin}: not valid JSON ({SafeText.Clip(e.Message.Split(". ")[0], 200)})"); }
        if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("prompt", out var p) && p.ValueKind == JsonValueKind.String)
            return (p.GetString()!, GenerationPrompt.FromText(origin, p.GetString()!, format));
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{origin}: expected {{\"prompt\": \"...\"}} or {{\"messages\": [...]}}");
        if (format is not (DataFormat.Chat or DataFormat.Preference))
            throw new InvalidDataException($"{origin}: \"messages\" prompts need data.format chat; use {{\"prompt\": \"...\"}}");
        string? system = null;
        var turns = new List<ChatTurn>();
        string? pendingUser = null;
        foreach (var m in messages.EnumerateArray())
        {
            string role = m.TryGetProperty("role", out var r) && r.ValueKind == JsonValueKind.String ? r.GetString()! : "";
            string content = m.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString()! : "";
            switch (role)
            {
                case "system" when turns.Count == 0 && pendingUser is null: system = content; break;
                case "user" when pendingUser is null: pendingUser = content; break;
                case "assistant" when pendingUser is not null: turns.Add(new ChatTurn(pendingUser, content)); pendingUser = null; break;
                default: throw new InvalidDataException($"{origin}: message role {SafeText.Quote(role, 40)} out of order; expected [system], then user/assistant pairs, ending with user");
            }
        }
        if (pendingUser is null) throw new InvalidDataException($"{origin}: the messages must end with a user message (the prompt to answer)");
        turns.Add(new ChatTurn(pendingUser, ""));
        return (pendingUser, new ChatExample(origin, system, turns));
    }
}
