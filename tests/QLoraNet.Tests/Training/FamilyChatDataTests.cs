using QLoraNet.Models;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;

namespace QLoraNet.Tests.Training;

/// <summary>
/// The sales chat rows through the training data pipeline with each family's tokenizer and shipped template: every
/// example trains exactly its assistant answers and their end-of-turn token.
/// </summary>
[Trait("tier", "unit")]
public sealed class FamilyChatDataTests : IDisposable
{
    readonly TempDir dir = Paths.Temp();

    public void Dispose() => dir.Dispose();

    /// <summary>The first rows of datasets/sales/train.jsonl (each: system, user, assistant).</summary>
    string SalesRows(int n)
    {
        var lines = File.ReadLines(Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl")).Take(n);
        File.WriteAllLines(dir["sales.jsonl"], lines);
        return dir["sales.jsonl"];
    }

    static DataConfig Chat(string file, TemplateKind template = TemplateKind.Auto, SystemRole role = SystemRole.Native, bool packing = false) =>
        new([file], null, 0, DataFormat.Chat, template, null, 512, packing, false, false, new ColumnMapping()) { SystemRole = role };

    [Theory]
    [InlineData("llama3", "<|eot_id|>", SystemRole.Native)]
    [InlineData("qwen2", "<|im_end|>", SystemRole.Native)]
    [InlineData("mistral", "</s>", SystemRole.Native)]
    [InlineData("gemma", "<end_of_turn>", SystemRole.Fold)]
    [InlineData("gemma2", "<end_of_turn>", SystemRole.Fold)]
    public void Sales_chats_train_the_answers_and_their_end_of_turn_token(string family, string endOfTurn, SystemRole role)
    {
        string modelDir = Paths.Family(family);
        var tok = TextTokenizers.Load(modelDir);
        string file = SalesRows(12);
        var data = TrainingData.Build(Chat(file, role: role), tok, seed: 0, modelDir);
        Assert.Equal(12, data.Stats.TrainExamples);
        int eot = tok.TokenId(endOfTurn)!.Value;
        // Each row's answers, joined as the trained tokens decode (the end-of-turn tokens are special and drop out).
        var answers = File.ReadLines(file).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("messages").EnumerateArray()
            .Where(m => m.GetProperty("role").GetString() == "assistant").Select(m => m.GetProperty("content").GetString()!.Trim()).ToList())
            .ToDictionary(a => string.Concat(a).Replace(" ", ""), a => a.Count);
        foreach (var seq in data.Train)
        {
            var trained = seq.Labels.Where(l => l != TokenizedExample.IgnoreIndex).ToList();
            Assert.Equal(eot, trained[^1]);
            string key = tok.Decode(trained).Replace(" ", "");
            Assert.True(answers.ContainsKey(key), $"trained tokens decode to {tok.Decode(trained)}");
            Assert.Equal(answers[key], trained.Count(i => i == eot));
            // Everything after the end-of-turn token (ChatML's and Gemma's newline) is masked.
            int last = Array.LastIndexOf(seq.Labels, eot);
            Assert.All(seq.Labels[(last + 1)..], l => Assert.Equal(TokenizedExample.IgnoreIndex, l));
        }
    }

    [Fact]
    public void Gemma_refuses_a_system_message_unless_folded_and_folding_puts_it_in_the_first_user_turn()
    {
        string modelDir = Paths.Family("gemma");
        var tok = TextTokenizers.Load(modelDir);
        string file = SalesRows(2);
        var e = Assert.Throws<InvalidDataException>(() => TrainingData.Build(Chat(file), tok, 0, modelDir));
        Assert.Contains("sales.jsonl:1: template 'gemma' has no system role", e.Message);
        Assert.Contains("data.system_role: fold", e.Message);

        var data = TrainingData.Build(Chat(file, role: SystemRole.Fold), tok, 0, modelDir);
        var text = tok.Decode(data.Train[0].InputIds);
        Assert.StartsWith("user\nYou are the sales assistant of Kestrel Ridge Outfitters", text);
    }

    [Fact]
    public void Qwen_writes_its_default_system_prompt_only_when_the_row_has_none()
    {
        string modelDir = Paths.Family("qwen2");
        var tok = TextTokenizers.Load(modelDir);
        var config = QLoraNet.Formats.TokenizerConfigJson.Load(modelDir);
        var chat = ChatTemplates.Resolve(TemplateKind.Auto, tok, config)!;
        string Render(params ChatMessage[] m) => string.Concat(chat.Render(m, false).Select(s => s.Text));
        Assert.StartsWith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi",
            Render(new("user", "Hi"), new("assistant", "Hello")));
        Assert.StartsWith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi", Render(new("system", "Be brief."), new("user", "Hi"), new("assistant", "Hello")));
        Assert.Null(((ChatMlTemplate)ChatTemplates.Resolve(TemplateKind.Chatml, tok, QLoraNet.Formats.TokenizerConfigJson.Empty)!).DefaultSystem);
    }

    [Fact]
    public void An_unrecognised_shipped_template_is_an_error_naming_the_choices()
    {
        var tok = TextTokenizers.Load(Paths.Family("qwen2"));
        var config = QLoraNet.Formats.TokenizerConfigJson.Empty with { ChatTemplate = "{% for m in messages %}### {{ m.role }}: {{ m.content }}{% endfor %}", ChatTemplateSource = "x/tokenizer_config.json" };
        var e = Assert.Throws<InvalidDataException>(() => ChatTemplates.Resolve(TemplateKind.Auto, tok, config));
        Assert.Equal("x/tokenizer_config.json: the chat template is not one QLoraNet renders (it matches none of the known families' templates); set data.template (or --template) to one of auto, llama2-chat, llama3, chatml, mistral-instruct, gemma, alpaca, none", e.Message);
        Assert.Equal(TemplateKind.Llama3, ChatTemplates.Resolve(TemplateKind.Llama3, tok, config)!.Kind);       // named: no recognition needed
        var none = Assert.Throws<InvalidDataException>(() => ChatTemplates.Resolve(TemplateKind.Auto, tok, QLoraNet.Formats.TokenizerConfigJson.Empty));
        Assert.Contains("the model ships no chat template", none.Message);
    }

    [Fact]
    public void A_tokenizer_json_model_trains_completion_and_packed_chat_rows()
    {
        string modelDir = Paths.Family("llama3");
        var tok = TextTokenizers.Load(modelDir);
        var packed = TrainingData.Build(Chat(SalesRows(8), packing: true), tok, 0, modelDir);
        Assert.True(packed.Train.Count < 8);
        File.WriteAllText(dir["c.jsonl"], "{\"text\": \"Ridge Club membership is free.\"}\n");
        var completion = TrainingData.Build(new DataConfig([dir["c.jsonl"]], null, 0, DataFormat.Completion, TemplateKind.Auto, null, 64, false, false, false, new ColumnMapping()), tok, 0, modelDir);
        var ids = completion.Train[0].InputIds;
        Assert.Equal(tok.BosId, ids[0]);
        Assert.Equal(tok.EosId, ids[^1]);
        Assert.Equal("Ridge Club membership is free.", tok.Decode(ids));
    }
}
