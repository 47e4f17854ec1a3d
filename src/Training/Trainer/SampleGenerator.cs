using QLoraNet.Models;
using QLoraNet.Training.Data;
using TorchSharp;

namespace QLoraNet.Training.Trainer;

/// <summary>One prompt's greedy answer at a step of a run.</summary>
public sealed record SampleGeneration(int Step, string Prompt, string Completion);

/// <summary>
/// Greedy answers to the run's sample prompts (<see cref="SamplePrompts"/>) with the model as it stands: through the
/// same <see cref="TextGenerator"/> as `generate`, in eval mode (no dropout, so no draw from the run's random
/// stream), without a graph, inside a dispose scope; the model is put back in the mode it was in. Stops at EOS or
/// after <c>maxNewTokens</c>; the completion is decoded without the stop token.
/// </summary>
public sealed class SampleGenerator(LlamaForCausalLM model, ITextTokenizer tokenizer, IReadOnlyList<SamplePrompt> prompts,
    int maxNewTokens, IReadOnlyList<int> stopIds)
{
    public IReadOnlyList<SamplePrompt> Prompts => prompts;

    public IReadOnlyList<SampleGeneration> Generate(int step)
    {
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            using var scope = torch.NewDisposeScope();
            var options = new GenerationOptions(maxNewTokens, Temperature: 0, StopIds: stopIds);
            return prompts.Select(p =>
            {
                var ids = TextGenerator.Generate(model, p.InputIds, options);
                var answer = ids.Count > 0 && stopIds.Contains(ids[^1]) ? ids.Take(ids.Count - 1) : ids;
                return new SampleGeneration(step, p.Text, tokenizer.Decode(answer).Trim());
            }).ToList();
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }
}
