using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.AI;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;
using TorchSharp;
using static TorchSharp.torch;
using TemplateMessage = QLoraNet.Training.Data.ChatMessage;

namespace QLoraNet;

/// <summary>
/// A model loaded for inference: a Hugging Face checkpoint directory, its base quantized on load as asked, with an
/// optional LoRA adapter, and its tokenizer. Generates text (<see cref="GenerateAsync"/>, streamed by
/// <see cref="GenerateStreamingAsync"/>), measures perplexity, and serves as a Microsoft.Extensions.AI chat client
/// (<see cref="AsChatClient"/>). One generation runs at a time per model; others wait. Dispose it to free the weights.
/// </summary>
public sealed class LanguageModel : IDisposable
{
    readonly BuiltModel _built;
    readonly SemaphoreSlim _gate = new(1, 1);
    readonly string _templateName;
    IChatTemplate? _template;

    LanguageModel(string directory, BuiltModel built, ITextTokenizer tokenizer, LanguageModelOptions options, LibTorchInfo libTorch)
    {
        (ModelDirectory, _built, Tokenizer, _templateName, LibTorch) = (directory, built, tokenizer, options.ChatTemplate, libTorch);
        AdapterDirectory = options.AdapterDirectory;
    }

    /// <summary>The checkpoint directory.</summary>
    public string ModelDirectory { get; }

    /// <summary>The LoRA adapter applied, or null.</summary>
    public string? AdapterDirectory { get; }

    /// <summary>The most tokens the model attends to (config.json's max_position_embeddings).</summary>
    public int ContextLength => _built.Architecture.MaxPositions;

    /// <summary>Where it runs: "cpu" or "cuda".</summary>
    public string Device => _built.Model.Device.type == DeviceType.CUDA ? "cuda" : "cpu";

    /// <summary>The base format the decoder linears are held in (one spelling, e.g. "nf4-dq").</summary>
    public string BaseFormat => _built.BaseFormat.ToString();

    /// <summary>The libtorch the model runs on.</summary>
    public LibTorchInfo LibTorch { get; }

    internal ITextTokenizer Tokenizer { get; }
    internal LlamaForCausalLM Model => _built.Model;

    /// <summary>Loads a model directory (config.json, *.safetensors, tokenizer files).</summary>
    /// <exception cref="QLoraNetModelException">the directory, adapter or an option cannot be used.</exception>
    /// <exception cref="QLoraNetBackendException">libtorch failed to load, or cuda was asked without a GPU.</exception>
    public static LanguageModel Load(string modelDirectory, LanguageModelOptions? options = null) => Errors.Guard(() =>
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        options ??= new LanguageModelOptions();
        var libTorch = QLoraNet.LibTorch.Load();
        if (!DeviceChoice.Names.Contains(options.Device))
            throw new QLoraNetModelException($"device '{options.Device}' is not a device; use {string.Join(", ", DeviceChoice.Names)}");
        QLoraNet.LibTorch.RequireCudaIfAsked(options.Device, "device");
        if (!YamlNames.TryParse(options.ChatTemplate, out TemplateKind _))
            throw new QLoraNetModelException($"chat template '{options.ChatTemplate}' is not one of {ChatTemplates.Choices}");
        if (!Directory.Exists(modelDirectory)) throw new QLoraNetModelException($"model directory '{modelDirectory}' does not exist");
        var device = DeviceChoice.Resolve(options.Device, "device");
        var compute = options.ComputeDType switch
        {
            "fp32" => ScalarType.Float32,
            "bf16" => ScalarType.BFloat16,
            null => device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32,
            var other => throw new QLoraNetModelException($"compute dtype '{other}' is not one of fp32, bf16"),
        };
        var format = QLoraNet.Quant.BaseFormat.Parse(options.BaseFormat);
        var tokenizer = TextTokenizers.Load(modelDirectory);
        var built = ModelBuilder.Build(modelDirectory, new ModelBuildOptions(device, compute, format,
            KernelSelection.For(device, new KernelOptions()), AdapterDir: options.AdapterDirectory));
        built.Model.eval();
        return new LanguageModel(modelDirectory, built, tokenizer, options, libTorch);
    });

    /// <summary>Continues <paramref name="prompt"/> (tokenized as is, with the tokenizer's default special tokens, e.g. BOS)
    /// and returns the continuation only.</summary>
    /// <exception cref="QLoraNetModelException">a setting is out of range or the prompt does not fit the context.</exception>
    public async Task<string> GenerateAsync(string prompt, GenerationSettings? settings = null, CancellationToken cancellationToken = default)
    {
        var text = new System.Text.StringBuilder();
        await foreach (var delta in GenerateStreamingAsync(prompt, settings, cancellationToken).ConfigureAwait(false)) text.Append(delta);
        return text.ToString();
    }

    /// <summary>Like <see cref="GenerateAsync"/>, yielding the continuation as text deltas as tokens are generated.</summary>
    public IAsyncEnumerable<string> GenerateStreamingAsync(string prompt, GenerationSettings? settings = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var ids = Tokenizer.Encode(prompt);
        return Stream(ids, settings ?? new GenerationSettings(), StopIds([]), new GenerationStats(), cancellationToken);
    }

    /// <summary>Mean next-token loss and perplexity of <paramref name="text"/> (tokenized with BOS), scored in windows of
    /// <paramref name="windowLength"/> tokens starting every <paramref name="stride"/> tokens (default: no overlap).</summary>
    /// <exception cref="QLoraNetModelException">the text has fewer than two tokens, or a window setting is invalid.</exception>
    public PerplexityResult EvaluatePerplexity(string text, int windowLength = 512, int? stride = null) => Errors.Guard(() =>
    {
        ArgumentNullException.ThrowIfNull(text);
        _gate.Wait();
        try
        {
            var ids = Tokenizer.Encode(text).Select(i => (long)i).ToList();
            var totals = WindowedLoss.Compute(Model, ids, windowLength, stride ?? windowLength);
            return new PerplexityResult(totals.Mean, totals.Perplexity, totals.Tokens);
        }
        finally { _gate.Release(); }
    });
    // TODO(evaluation): task evaluation (lm-evaluation-harness style) once the evaluation project is on main.

    /// <summary>This model as a Microsoft.Extensions.AI chat client, rendering its chat template; the client does not own the model.</summary>
    public IChatClient AsChatClient() => new QLoraNetChatClient(this);

    /// <summary>Frees the model's weights.</summary>
    public void Dispose()
    {
        _built.Dispose();
        _gate.Dispose();
    }

    /// <summary>The chat template (resolved on first use: a model without one can still generate raw text).</summary>
    internal IChatTemplate Template => _template ??= Errors.Guard(() =>
    {
        YamlNames.TryParse(_templateName, out TemplateKind kind);
        return ChatTemplates.Resolve(kind, Tokenizer, TokenizerConfigJson.Load(ModelDirectory))
            ?? throw new QLoraNetModelException($"chat template '{_templateName}' renders instruction rows only; choose a chat template");
    });

    /// <summary>The ids of a conversation rendered with the chat template and the assistant's generation prompt.</summary>
    internal IReadOnlyList<int> ChatPromptIds(IReadOnlyList<TemplateMessage> messages)
    {
        var template = Template;
        var prepared = ChatTemplates.ApplySystemRole(messages, template, template.SupportsSystem ? SystemRole.Native : SystemRole.Fold, "chat");
        TemplateMessage.CheckOrder(prepared, "chat", allowTrailingUser: true);
        return ExampleEncoder.Tokenize(Tokenizer, template.Render(prepared, addGenerationPrompt: true), template.WholeText).Ids;
    }

    /// <summary>Every EOS id of config.json and the tokenizer, plus the ids of <paramref name="extraTokens"/>.</summary>
    internal HashSet<int> StopIds(IEnumerable<string> extraTokens)
    {
        var ids = _built.Architecture.Tokens.Eos.Append(Tokenizer.EosId).ToHashSet();
        foreach (var t in extraTokens) if (Tokenizer.TokenId(t) is int id) ids.Add(id);
        return ids;
    }

    /// <summary>How a generation ended and what it used (for chat responses).</summary>
    internal sealed class GenerationStats
    {
        public int InputTokens;
        public int OutputTokens;
        public bool HitLength;
    }

    /// <summary>
    /// Generation on a thread of its own (libtorch's grad mode and dispose scopes are per thread), handing text deltas
    /// over a channel; leaving the enumeration early or cancelling stops it after the current token.
    /// </summary>
    internal async IAsyncEnumerable<string> Stream(IReadOnlyList<int> promptIds, GenerationSettings settings, IReadOnlySet<int> stopIds,
        GenerationStats stats, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        Check(settings, promptIds.Count);
        var channel = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var worker = Task.Factory.StartNew(() =>
        {
            try
            {
                Generate(promptIds, settings, stopIds, stats, d => channel.Writer.TryWrite(d), stop.Token);
                channel.Writer.TryComplete();
            }
            catch (Exception e) { channel.Writer.TryComplete(Errors.Translate(e) ?? e); }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        try
        {
            // ReadAllAsync hands out what is buffered without looking at the token: check it before every piece, so
            // nothing more is yielded once the caller cancels.
            await foreach (var delta in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                cancellationToken.ThrowIfCancellationRequested();
                yield return delta;
            }
        }
        finally
        {
            stop.Cancel();
            try { await worker.ConfigureAwait(false); } catch (OperationCanceledException) { }
        }
        cancellationToken.ThrowIfCancellationRequested();
    }

    void Check(GenerationSettings s, int promptTokens)
    {
        if (s.MaxNewTokens < 0) throw new QLoraNetModelException($"max new tokens must be >= 0, got {s.MaxNewTokens}");
        if (s.Temperature < 0 || double.IsNaN(s.Temperature)) throw new QLoraNetModelException($"temperature must be >= 0 (0 = greedy), got {s.Temperature}");
        if (!(s.TopP > 0 && s.TopP <= 1)) throw new QLoraNetModelException($"top-p must be in (0, 1], got {s.TopP}");
        if (promptTokens == 0) throw new QLoraNetModelException("the prompt is empty: generation needs at least one token");
        if (promptTokens >= ContextLength)
            throw new QLoraNetModelException($"the prompt has {promptTokens} tokens; the model's context is {ContextLength}");
    }

    void Generate(IReadOnlyList<int> promptIds, GenerationSettings s, IReadOnlySet<int> stopIds, GenerationStats stats,
        Action<string> emit, CancellationToken cancel)
    {
        _gate.Wait(cancel);
        try
        {
            stats.InputTokens = promptIds.Count;
            int budget = Math.Min(s.MaxNewTokens, ContextLength - promptIds.Count);
            var text = new StreamingText(Tokenizer, s.StopSequences);
            using var noGrad = no_grad();
            using var cache = Model.NewKvCache(batch: 1, capacity: promptIds.Count + budget);
            // Sampling runs on the CPU with a CPU generator (TorchSharp creates every Generator on the CPU): the same
            // draws on every device, at the cost of moving one row of logits per token.
            using var generator = s.Temperature > 0 ? new Generator(s.Seed, CPU) : null;
            long[] next = promptIds.Select(i => (long)i).ToArray();
            for (int n = 0; n < budget; n++)
            {
                cancel.ThrowIfCancellationRequested();
                int token;
                using (NewDisposeScope())
                {
                    var ids = tensor(next, [1, next.Length], ScalarType.Int64, Model.Device);     // (1, T)
                    var hidden = Model.Model.forward(ids, null, null, cache);                    // (1, T, hidden)
                    var logits = Model.Logits(hidden[0, -1]).to(ScalarType.Float32).cpu();       // (vocab)
                    token = TokenSampler.Next(logits, s.Temperature, s.TopP, generator);
                }
                stats.OutputTokens++;
                if (stopIds.Contains(token)) return;
                var (delta, stopped) = text.Add(token);
                if (delta.Length > 0) emit(delta);
                if (stopped) return;
                next = [token];
            }
            stats.HitLength = true;
            if (text.Flush() is { Length: > 0 } rest) emit(rest);
        }
        finally { _gate.Release(); }
    }
}
