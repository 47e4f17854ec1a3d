namespace QLoraNet.Training.Data;

/// <summary>
/// The Stanford Alpaca prompt (github.com/tatsu-lab/stanford_alpaca, train.py PROMPT_DICT), with and without an
/// input; the output follows "### Response:\n" and ends with EOS. A system prompt, if any, replaces the first
/// sentence pair (the task description). Instruction rows only.
/// </summary>
public static class AlpacaTemplate
{
    const string WithInput = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.";
    const string WithoutInput = "Below is an instruction that describes a task. Write a response that appropriately completes the request.";

    public static IReadOnlyList<Segment> Render(InstructionExample ex)
    {
        bool hasInput = ex.Input.Trim().Length > 0;
        string preamble = ex.System?.Trim() ?? (hasInput ? WithInput : WithoutInput);
        string prompt = hasInput
            ? $"{preamble}\n\n### Instruction:\n{ex.Instruction.Trim()}\n\n### Input:\n{ex.Input.Trim()}\n\n### Response:\n"
            : $"{preamble}\n\n### Instruction:\n{ex.Instruction.Trim()}\n\n### Response:\n";
        return [new Segment(prompt, Trained: false, Bos: true), new Segment(ex.Output.Trim(), Trained: true, Eos: true)];
    }
}
