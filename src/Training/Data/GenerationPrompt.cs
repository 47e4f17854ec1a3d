using QLoraNet.Models;
using QLoraNet.Training.Config;

namespace QLoraNet.Training.Data;

/// <summary>
/// A prompt rendered the way training renders it, stopping where the model's answer would begin (a "generation
/// prompt"): the example goes through the run's own template (<see cref="PromptTemplates.Render(RawExample, IChatTemplate?, string?, SystemRole)"/>) with an empty
/// final answer, and the segments from the last trained one on are dropped. So a chat prompt under llama2-chat ends
/// with <c>[/INST]</c>, an instruction under alpaca with <c>### Response:\n</c>, and earlier turns of a
/// conversation keep their answers. Completion data has no prompt part: the text itself, after BOS, is continued.
/// </summary>
public static class GenerationPrompt
{
    /// <summary>The segments the model reads before answering the last user turn of <paramref name="example"/>.</summary>
    public static IReadOnlyList<Segment> Render(RawExample example, DataConfig data)
    {
        if (example is CompletionExample c) return [new Segment(c.Text, Trained: false, Bos: true)];
        var segments = PromptTemplates.Render(example, data.Template, data.SystemPrompt);
        int lastTrained = segments.Select((s, i) => (s, i)).LastOrDefault(x => x.s.Trained, (null!, -1)).Item2;
        return lastTrained < 0 ? segments : segments.Take(lastTrained).ToList();
    }

    /// <summary>A single user message as an example of the data's format.</summary>
    public static RawExample FromText(string origin, string text, DataFormat format) => format switch
    {
        DataFormat.Chat or DataFormat.Preference => new ChatExample(origin, null, [new ChatTurn(text, "")]),
        DataFormat.Instruction => new InstructionExample(origin, text, "", "", null),
        _ => new CompletionExample(origin, text),
    };

    /// <summary>The token ids of rendered segments (BOS/EOS as ids), as the data pipeline encodes them.</summary>
    public static IReadOnlyList<int> Encode(IReadOnlyList<Segment> segments, ITextTokenizer tokenizer) =>
        segments.SelectMany(s => tokenizer.Encode(s.Text, s.Bos, s.Eos)).ToList();
}
