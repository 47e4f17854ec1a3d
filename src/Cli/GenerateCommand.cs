using System.CommandLine;
using System.Text.Encodings.Web;
using System.Text.Json;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Quant;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// `generate`: continue a prompt with a Hugging Face model directory (greedy or temperature/top-p sampling). The prompt is
/// tokenized raw (the tokenizer's default special tokens) unless --chat wraps it as a user message in the model's chat
/// template (or --template's) with the generation prompt; then generation also stops at the template's end-of-turn
/// token and only the reply is printed. It always stops at every EOS id of config.json and the tokenizer.
/// </summary>
public static class GenerateCommand
{
    public static Command Create(TextWriter stdout)
    {
        var modelOptions = new ModelOptions();
        var prompt = new Option<string>("--prompt") { Description = "text to continue", Required = true };
        var maxNewTokens = new Option<int>("--max-new-tokens") { Description = "stop after this many new tokens", DefaultValueFactory = _ => 64 };
        var temperature = new Option<double>("--temperature") { Description = "0 = greedy; otherwise sample from softmax(logits / T)", DefaultValueFactory = _ => 0.0 };
        var topP = new Option<double>("--top-p") { Description = "nucleus sampling: sample among the most likely tokens holding this much probability", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<ulong>("--seed") { Description = "seed of the sampling generator", DefaultValueFactory = _ => 0UL };
        var json = new Option<bool>("--json") { Description = "print {\"input_ids\", \"output_ids\", \"text\"} as one JSON line" };
        var chat = new Option<bool>("--chat") { Description = "wrap the prompt as a user message in the chat template, with the generation prompt" };
        var template = new Option<string>("--template") { Description = $"chat template for --chat: {ChatTemplates.Choices} (auto: the model's own)", DefaultValueFactory = _ => "auto" };
        template.AcceptOnlyFromAmong(YamlNames.Choices<TemplateKind>().ToArray());

        var cmd = new Command("generate", "continue a prompt with a Llama model");
        modelOptions.AddTo(cmd);
        foreach (var o in new Option[] { prompt, maxNewTokens, temperature, topP, seed, json, chat, template }) cmd.Options.Add(o);
        cmd.SetAction(parsed =>
        {
            var options = new GenerationOptions(parsed.GetValue(maxNewTokens), parsed.GetValue(temperature), parsed.GetValue(topP), parsed.GetValue(seed)).Validated();
            using var loaded = modelOptions.Load(parsed);
            var (llama, tokenizer, arch) = (loaded.Model, loaded.Tokenizer, loaded.Architecture);

            IReadOnlyList<int> inputIds;
            var stopIds = arch.Tokens.Eos.Append(tokenizer.EosId).ToList();
            bool asChat = parsed.GetValue(chat);
            if (asChat)
            {
                YamlNames.TryParse(parsed.GetValue(template)!, out TemplateKind kind);
                var chatTemplate = ChatTemplates.Resolve(kind, tokenizer, TokenizerConfigJson.Load(parsed.GetValue(modelOptions.Model)!))
                    ?? throw new ArgumentException("--template alpaca renders instruction rows only; choose a chat template");
                var segments = chatTemplate.Render([new ChatMessage(ChatMessage.User, parsed.GetValue(prompt)!)], addGenerationPrompt: true);
                inputIds = ExampleEncoder.Tokenize(tokenizer, segments, chatTemplate.WholeText).Ids;
                stopIds.AddRange(chatTemplate.EndOfTurnTokens.Select(t => tokenizer.TokenId(t)).OfType<int>());
            }
            else inputIds = tokenizer.Encode(parsed.GetValue(prompt)!);
            // Past max_position_embeddings the model was never trained (and RoPE positions extrapolate): the prompt
            // must fit, and generation stops at the context length with a note rather than running on.
            int context = arch.MaxPositions;
            if (inputIds.Count > context)
                throw new ArgumentException($"--prompt: {inputIds.Count} tokens is more than the model's context length {context} (max_position_embeddings in its config.json); shorten the prompt");
            int room = context - inputIds.Count;
            bool capped = options.MaxNewTokens > room;
            var outputIds = TextGenerator.Generate(llama, inputIds, options with { StopIds = stopIds.Distinct().ToList(), MaxNewTokens = Math.Min(options.MaxNewTokens, room) });
            if (capped && outputIds.Count == room)
                parsed.InvocationConfiguration.Error.WriteLine(
                    $"note: stopped after {room} new tokens at the model's context length {context} (max_position_embeddings); --max-new-tokens {options.MaxNewTokens} was not reached");

            if (parsed.GetValue(json))
                stdout.WriteLine(Json(inputIds, outputIds, tokenizer.Decode(outputIds)));
            else
                stdout.WriteLine(tokenizer.Decode(asChat ? outputIds : inputIds.Concat(outputIds)));
            return 0;
        });
        return cmd;
    }

    /// <summary>One line in the layout of Python's json.dumps: {"input_ids": [...], "output_ids": [...], "text": "..."}.</summary>
    static string Json(IEnumerable<int> inputIds, IEnumerable<int> outputIds, string text)
    {
        var encoder = new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        return $"{{\"input_ids\": [{string.Join(", ", inputIds)}], \"output_ids\": [{string.Join(", ", outputIds)}], \"text\": {JsonSerializer.Serialize(text, encoder)}}}";
    }
}
