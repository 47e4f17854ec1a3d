// A Microsoft.Extensions.AI IChatClient over the tiny model and a fine-tuned adapter (the quickstart's, by default),
// wrapped in the standard middleware, answering one question streamed token by token.
// Run from the repository root: dotnet run --project samples/ChatClient -- [adapter dir] [question]
using Microsoft.Extensions.AI;
using QLoraNet;

string adapter = args.Length > 0 ? args[0] : "runs/quickstart/final";
string question = args.Length > 1 ? args[1] : "What does the Pro plan cost?";

using var model = LanguageModel.Load("models/tiny-llama-sotu", new LanguageModelOptions
{
    AdapterDirectory = adapter,
    BaseFormat = "nf4-dq",   // the adapter was trained against the NF4 base (QLoRA)
    Device = "cpu",
});

IChatClient client = new ChatClientBuilder(model.AsChatClient())
    .ConfigureOptions(o => o.MaxOutputTokens ??= 48)
    .Build();

List<ChatMessage> chat = [new(ChatRole.System, "You are a helpful sales assistant."), new(ChatRole.User, question)];
Console.WriteLine($"> {question}");
await foreach (var update in client.GetStreamingResponseAsync(chat, new ChatOptions { Temperature = 0f }))
    Console.Write(update.Text);
Console.WriteLine();
