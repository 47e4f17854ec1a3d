using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using TemplateMessage = QLoraNet.Training.Data.ChatMessage;

namespace QLoraNet;

/// <summary>
/// A Microsoft.Extensions.AI <see cref="IChatClient"/> over a <see cref="LanguageModel"/> (with its adapter): the
/// conversation is rendered with the model's chat template and the assistant's generation prompt; generation stops at
/// the template's end-of-turn token, every EOS, a stop sequence, <see cref="ChatOptions.MaxOutputTokens"/> or
/// cancellation. <see cref="ChatOptions.Temperature"/> (0 or unset: greedy), <see cref="ChatOptions.TopP"/> and
/// <see cref="ChatOptions.Seed"/> set the sampling. When the conversation does not fit the context with room for the
/// answer, the oldest user/assistant turns are dropped (the system message stays). Messages are system, user and
/// assistant text; other roles and contents (tools, images) are refused. The client does not own the model.
/// </summary>
public sealed class QLoraNetChatClient : IChatClient
{
    /// <summary>New tokens when <see cref="ChatOptions.MaxOutputTokens"/> is not set.</summary>
    public const int DefaultMaxOutputTokens = 256;

    readonly LanguageModel _model;
    readonly ChatClientMetadata _metadata;

    /// <summary>A chat client over <paramref name="model"/>.</summary>
    public QLoraNetChatClient(LanguageModel model)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _metadata = new ChatClientMetadata("qloranet", null, ModelId);
    }

    string ModelId => Path.GetFileName(Path.GetFullPath(_model.ModelDirectory).TrimEnd('/'))
        + (_model.AdapterDirectory is { } a ? "+" + Path.GetFileName(Path.GetFullPath(a).TrimEnd('/')) : "");

    /// <inheritdoc/>
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var (ids, settings, stops) = Prepare(messages, options);
        var stats = new LanguageModel.GenerationStats();
        var text = new System.Text.StringBuilder();
        await foreach (var delta in _model.Stream(ids, settings, stops, stats, cancellationToken).ConfigureAwait(false)) text.Append(delta);
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, text.ToString()))
        {
            ModelId = ModelId,
            FinishReason = stats.HitLength ? ChatFinishReason.Length : ChatFinishReason.Stop,
            Usage = new UsageDetails { InputTokenCount = stats.InputTokens, OutputTokenCount = stats.OutputTokens, TotalTokenCount = stats.InputTokens + stats.OutputTokens },
        };
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (ids, settings, stops) = Prepare(messages, options);
        var stats = new LanguageModel.GenerationStats();
        string responseId = Guid.NewGuid().ToString("N");
        await foreach (var delta in _model.Stream(ids, settings, stops, stats, cancellationToken).ConfigureAwait(false))
            yield return new ChatResponseUpdate(ChatRole.Assistant, delta) { ModelId = ModelId, ResponseId = responseId, MessageId = responseId };
        yield return new ChatResponseUpdate(ChatRole.Assistant, (string?)null)
        {
            ModelId = ModelId, ResponseId = responseId, MessageId = responseId,
            FinishReason = stats.HitLength ? ChatFinishReason.Length : ChatFinishReason.Stop,
            Contents = [new UsageContent(new UsageDetails { InputTokenCount = stats.InputTokens, OutputTokenCount = stats.OutputTokens, TotalTokenCount = stats.InputTokens + stats.OutputTokens })],
        };
    }

    (IReadOnlyList<int> Ids, GenerationSettings Settings, IReadOnlySet<int> Stops) Prepare(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var settings = new GenerationSettings
        {
            MaxNewTokens = options?.MaxOutputTokens ?? DefaultMaxOutputTokens,
            Temperature = options?.Temperature ?? 0,
            TopP = options?.TopP ?? 1,
            Seed = options?.Seed is long seed ? unchecked((ulong)seed) : 0,
            StopSequences = options?.StopSequences?.ToList() ?? [],
        };
        var conversation = messages.Select(ToTemplate).ToList();
        var ids = Errors.Guard(() => Fit(conversation, settings.MaxNewTokens));
        return (ids, settings, _model.StopIds(_model.Template.EndOfTurnTokens));
    }

    /// <summary>The prompt ids, after dropping the oldest user/assistant pairs while prompt + answer exceed the context.</summary>
    IReadOnlyList<int> Fit(List<TemplateMessage> conversation, int maxNew)
    {
        int budget = _model.ContextLength - Math.Min(maxNew, _model.ContextLength / 2);
        while (true)
        {
            var ids = _model.ChatPromptIds(conversation);
            int first = conversation.Count > 0 && conversation[0].Role == TemplateMessage.System ? 1 : 0;
            if (ids.Count <= budget || conversation.Count - first < 3) return ids;
            conversation.RemoveRange(first, 2);
        }
    }

    static TemplateMessage ToTemplate(ChatMessage m)
    {
        string role = m.Role == ChatRole.System ? TemplateMessage.System
            : m.Role == ChatRole.User ? TemplateMessage.User
            : m.Role == ChatRole.Assistant ? TemplateMessage.Assistant
            : throw new QLoraNetModelException($"chat: role '{m.Role}' is not supported; use system, user and assistant messages");
        if (m.Contents.Any(c => c is not TextContent))
            throw new QLoraNetModelException($"chat: a {role} message holds {m.Contents.First(c => c is not TextContent).GetType().Name}; only text is supported");
        return new TemplateMessage(role, m.Text);
    }

    /// <inheritdoc/>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return _metadata;
        if (serviceType == typeof(LanguageModel)) return _model;
        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    /// <summary>Nothing to free: the model belongs to the caller.</summary>
    public void Dispose() { }
}
