using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// Autoregressive continuation with a KV cache: one forward over the prompt (prefill), then one token at a time,
/// each step attending to the cached keys/values instead of recomputing the prefix. Stops after MaxNewTokens or
/// at a stop id (the stop id is included in the result, as in Hugging Face's generate).
/// </summary>
public static class TextGenerator
{
    /// <returns>the generated ids only (not the prompt).</returns>
    public static IReadOnlyList<int> Generate(LlamaForCausalLM model, IReadOnlyList<int> promptIds, GenerationOptions options)
    {
        options = options.Validated();
        if (promptIds.Count == 0) throw new ArgumentException("the prompt is empty: generation needs at least one token (e.g. BOS)");
        var stopIds = options.StopIds ?? [];
        var device = model.Device;
        var generated = new List<int>();
        if (options.MaxNewTokens == 0) return generated;

        using var noGrad = no_grad();
        using var cache = model.NewKvCache(batch: 1, capacity: promptIds.Count + options.MaxNewTokens);
        using var generator = options.Temperature > 0 ? new Generator(options.Seed, device) : null;

        long[] next = promptIds.Select(i => (long)i).ToArray();
        while (true)
        {
            using var scope = NewDisposeScope();
            var ids = tensor(next, [1, next.Length], ScalarType.Int64, device);              // (1, T)
            var hidden = model.Model.forward(ids, null, null, cache);                        // (1, T, hidden)
            var logits = model.Logits(hidden[0, -1]);                                        // (vocab): only the last position
            int token = TokenSampler.Next(logits, options.Temperature, options.TopP, generator);
            generated.Add(token);
            if (stopIds.Contains(token) || generated.Count == options.MaxNewTokens) return generated;
            next = [token];
        }
    }
}
