namespace QLoraNet;

/// <summary>How <see cref="LanguageModel.Load"/> builds a model.</summary>
public sealed record LanguageModelOptions
{
    /// <summary>A PEFT LoRA adapter directory to apply (unmerged), e.g. a fine-tuning run's <c>final/</c>; null: the base model.</summary>
    public string? AdapterDirectory { get; init; }

    /// <summary>The base format of the decoder linears, quantized on load: <c>none</c> (the checkpoint's dtype), <c>nf4-dq</c>
    /// (what a QLoRA adapter was trained on), <c>nf4</c>, <c>int8</c>, ... (README: base formats). A pre-quantized
    /// directory loads as stored.</summary>
    public string BaseFormat { get; init; } = "none";

    /// <summary><c>auto</c> (CUDA when libtorch sees a GPU), <c>cpu</c> or <c>cuda</c>.</summary>
    public string Device { get; init; } = "auto";

    /// <summary>Compute dtype: <c>fp32</c> or <c>bf16</c>; null: fp32 on the CPU, bf16 on CUDA.</summary>
    public string? ComputeDType { get; init; }

    /// <summary>The chat template for chat use: <c>auto</c> (the model's own) or a name such as <c>llama2-chat</c>, <c>llama3</c>, <c>chatml</c>.</summary>
    public string ChatTemplate { get; init; } = "auto";
}

/// <summary>How to continue a text.</summary>
public sealed record GenerationSettings
{
    /// <summary>Stop after this many new tokens.</summary>
    public int MaxNewTokens { get; init; } = 64;

    /// <summary>0: greedy (deterministic); above 0: sample from softmax(logits / temperature).</summary>
    public double Temperature { get; init; }

    /// <summary>Nucleus sampling: sample among the most likely tokens holding this much probability.</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>Seed of the sampling generator (sampling only).</summary>
    public ulong Seed { get; init; }

    /// <summary>Texts that end the output when generated; the output stops before them.</summary>
    public IReadOnlyList<string> StopSequences { get; init; } = [];
}

/// <summary>Mean next-token loss and perplexity of a text (<see cref="LanguageModel.EvaluatePerplexity"/>).</summary>
/// <param name="MeanLoss">mean cross-entropy per predicted token, in nats.</param>
/// <param name="Perplexity">exp(<paramref name="MeanLoss"/>).</param>
/// <param name="Tokens">the number of predicted tokens.</param>
public sealed record PerplexityResult(double MeanLoss, double Perplexity, long Tokens);
