using Microsoft.Extensions.AI;

namespace QLoraNet.Tests.Api;

/// <summary>
/// <see cref="QLoraNetChatClient"/> over the tiny model on CPU: the template's prompt, streaming equal to the whole
/// answer, stop sequences, max tokens, seeded sampling, cancellation, the context limit and refused messages.
/// </summary>
[Trait("tier", "e2e")]
public sealed class ChatClientTests : IDisposable
{
    readonly LanguageModel _model = LanguageModel.Load(Paths.TinyModel, new LanguageModelOptions { Device = "cpu" });

    public void Dispose() => _model.Dispose();

    static readonly ChatOptions Greedy12 = new() { MaxOutputTokens = 12, Temperature = 0f };

    [Fact]
    public async Task The_prompt_is_the_chat_template_and_max_tokens_ends_the_answer()
    {
        var response = await _model.AsChatClient().GetResponseAsync([new ChatMessage(ChatRole.User, "Hi")], new ChatOptions { MaxOutputTokens = 4 });
        // The tiny model ships no template (SentencePiece): llama2-chat, "<s>[INST] Hi [/INST]" = 9 ids (GenerateTests).
        Assert.Equal(9, response.Usage!.InputTokenCount);
        Assert.Equal(4, response.Usage.OutputTokenCount);
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);
        Assert.Equal(ChatRole.Assistant, response.Messages.Single().Role);
        Assert.NotEmpty(response.Text);
    }

    [Fact]
    public async Task Streaming_yields_the_same_text_as_the_whole_response()
    {
        var client = _model.AsChatClient();
        List<ChatMessage> chat = [new(ChatRole.System, "Answer briefly."), new(ChatRole.User, "Tell me about the whale")];
        var whole = await client.GetResponseAsync(chat, Greedy12);
        var parts = new List<string>();
        await foreach (var u in client.GetStreamingResponseAsync(chat, Greedy12)) if (u.Text.Length > 0) parts.Add(u.Text);
        Assert.True(parts.Count > 1, "the answer came in one piece: not streamed");
        Assert.Equal(whole.Text, string.Concat(parts));
    }

    [Fact]
    public async Task A_stop_sequence_ends_the_answer_before_it()
    {
        var client = _model.AsChatClient();
        List<ChatMessage> chat = [new(ChatRole.User, "Tell me about the whale")];
        string full = (await client.GetResponseAsync(chat, Greedy12)).Text;
        Assert.True(full.Length >= 6, full);
        string stop = full.Substring(full.Length / 2, 2);
        int at = full.IndexOf(stop, StringComparison.Ordinal);
        var stopped = await client.GetResponseAsync(chat, new ChatOptions { MaxOutputTokens = 12, Temperature = 0f, StopSequences = [stop] });
        Assert.Equal(full[..at], stopped.Text);
        Assert.Equal(ChatFinishReason.Stop, stopped.FinishReason);
    }

    [Fact]
    public async Task Seeded_sampling_repeats_and_differs_from_greedy_settings()
    {
        var client = _model.AsChatClient();
        var sampled = new ChatOptions { MaxOutputTokens = 12, Temperature = 1.0f, TopP = 0.95f, Seed = 7 };
        string a = (await client.GetResponseAsync("Call me", sampled)).Text;
        string b = (await client.GetResponseAsync("Call me", sampled.Clone())).Text;
        Assert.Equal(a, b);
    }

    [Fact]
    public async Task Cancellation_stops_streaming()
    {
        using var cts = new CancellationTokenSource();
        int updates = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var u in _model.AsChatClient().GetStreamingResponseAsync("Call me", new ChatOptions { MaxOutputTokens = 200 }, cts.Token))
                if (++updates == 2) cts.Cancel();
        });
        Assert.Equal(2, updates);   // nothing more after the cancel, even what was already generated
    }

    [Fact]
    public async Task A_conversation_longer_than_the_context_drops_the_oldest_turns()
    {
        string longTurn = string.Concat(Enumerable.Repeat("the whale and the sea ", 60));
        var chat = new List<ChatMessage> { new(ChatRole.System, "Be brief.") };
        for (int i = 0; i < 6; i++) { chat.Add(new(ChatRole.User, longTurn)); chat.Add(new(ChatRole.Assistant, longTurn)); }
        chat.Add(new(ChatRole.User, "And now?"));
        var response = await _model.AsChatClient().GetResponseAsync(chat, new ChatOptions { MaxOutputTokens = 8 });
        Assert.InRange(response.Usage!.InputTokenCount!.Value, 1, _model.ContextLength - 8);
    }

    [Fact]
    public async Task Tool_messages_and_non_text_contents_are_refused_with_the_documented_type()
    {
        var client = _model.AsChatClient();
        var tool = await Assert.ThrowsAsync<QLoraNetModelException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.Tool, "x")]));
        Assert.Equal("chat: role 'tool' is not supported; use system, user and assistant messages", tool.Message);
        var image = new ChatMessage(ChatRole.User, [new DataContent(new byte[] { 1 }, "image/png")]);
        await Assert.ThrowsAsync<QLoraNetModelException>(() => client.GetResponseAsync([image]));
    }

    [Fact]
    public void Metadata_is_served_to_middleware()
    {
        var metadata = _model.AsChatClient().GetService<ChatClientMetadata>();
        Assert.NotNull(metadata);
        Assert.Equal("qloranet", metadata!.ProviderName);
        Assert.Equal("tiny-llama-sotu", metadata.DefaultModelId);
    }
}
