using QLoraNet.Models;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;
using QLoraNet.Training.Trainer;

namespace QLoraNet.Tests.Training;

[Trait("tier", "unit")]
public class SamplePromptsTests
{
    static readonly ITextTokenizer Tokenizer = TextTokenizers.Load(Paths.TinyModel);

    static DataConfig Data(DataFormat format = DataFormat.Chat, TemplateKind template = TemplateKind.Llama2Chat, string? system = null) =>
        new(["x.jsonl"], null, 0, format, template, system, 256, false, false, false, new ColumnMapping());

    [Fact]
    public void A_chat_prompt_is_rendered_as_training_renders_it_up_to_the_answer()
    {
        var p = SamplePrompts.Load(["How much is it?"], null, Data(system: "Be brief."), Tokenizer).Single();
        var expected = Tokenizer.Encode("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHow much is it? [/INST]", true, false);
        Assert.Equal(expected, p.InputIds);
        Assert.Equal("How much is it?", p.Text);
    }

    [Fact]
    public void A_file_of_lines_or_jsonl_messages_gives_the_prompts_and_earlier_turns_keep_their_answers()
    {
        using var tmp = Paths.Temp();
        File.WriteAllLines(tmp["p.txt"], ["first", "", "second"]);
        Assert.Equal(["first", "second"], SamplePrompts.Load(null, tmp["p.txt"], Data(), Tokenizer).Select(p => p.Text));

        File.WriteAllLines(tmp["p.jsonl"], [
            """{"prompt": "plain"}""",
            """{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "price?"}]}""",
        ]);
        var prompts = SamplePrompts.Load(null, tmp["p.jsonl"], Data(), Tokenizer);
        Assert.Equal(["plain", "price?"], prompts.Select(p => p.Text));
        var turn1 = Tokenizer.Encode("[INST] hi [/INST]", true, false).Concat(Tokenizer.Encode("hello ", false, true));
        var expected = turn1.Concat(Tokenizer.Encode("[INST] price? [/INST]", true, false));
        Assert.Equal(expected, prompts[1].InputIds);

        File.WriteAllLines(tmp["bad.jsonl"], ["""{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"""]);
        var e = Assert.Throws<InvalidDataException>(() => SamplePrompts.Load(null, tmp["bad.jsonl"], Data(), Tokenizer));
        Assert.Contains("bad.jsonl:1", e.Message);
        Assert.Contains("end with a user message", e.Message);
    }

    [Fact]
    public void Instruction_and_completion_prompts_use_their_templates()
    {
        var alpaca = SamplePrompts.Load(["Name a tent."], null, Data(DataFormat.Instruction, TemplateKind.Alpaca), Tokenizer).Single();
        Assert.EndsWith("### Response:", Tokenizer.Decode(alpaca.InputIds).TrimEnd());
        var completion = SamplePrompts.Load(["Once upon"], null, Data(DataFormat.Completion), Tokenizer).Single();
        Assert.Equal(Tokenizer.Encode("Once upon", true, false), completion.InputIds);
    }

    [Theory]
    [InlineData("training.sample_prompts=prompts.csv", "must be .txt or .jsonl")]
    [InlineData("training.sample_prompts=missing.txt", "not found")]
    [InlineData("training.sample_prompts=[]", "non-empty prompts")]
    [InlineData("training.sample_max_new_tokens=0", "sample_max_new_tokens")]
    [InlineData("output.tensorboard=maybe", "'output.tensorboard' must be true or false")]
    [InlineData("output.plot_log_scale=2", "'output.plot_log_scale' must be true or false")]
    [InlineData("lora.init_from=/nonexistent", "holds no adapter_config.json")]
    public void New_keys_are_validated(string setting, string message)
    {
        var e = Assert.Throws<ConfigException>(() => TrainConfig.Load(Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml"),
            [$"model.path={Paths.TinyModel}", $"data.train={Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl")}",
             $"data.validation={Path.Combine(Paths.RepoRoot, "datasets", "sales", "validation.jsonl")}", setting]));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void New_keys_survive_the_resolved_config()
    {
        using var tmp = Paths.Temp();
        var c = TrainConfig.Load(Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml"),
            [$"model.path={Paths.TinyModel}", $"data.train={Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl")}",
             $"data.validation={Path.Combine(Paths.RepoRoot, "datasets", "sales", "validation.jsonl")}",
             "training.sample_prompts=[\"a, b: c\", \"d\"]", "training.sample_max_new_tokens=7", "output.tensorboard=true", "output.plot_log_scale=true"]);
        File.WriteAllText(tmp["c.yaml"], c.ToYaml());
        var back = TrainConfig.Load(tmp["c.yaml"]);
        Assert.Equal(["a, b: c", "d"], back.Training.SamplePrompts);
        Assert.Equal(7, back.Training.SampleMaxNewTokens);
        Assert.True(back.Output.Tensorboard);
        Assert.True(back.Output.PlotLogScale);
    }

    [Fact]
    public void Metrics_from_before_the_new_columns_still_read()
    {
        using var tmp = Paths.Temp();
        File.WriteAllLines(tmp["m.csv"], [
            "step,epoch,loss,val_loss,learning_rate,grad_norm,tokens,tokens_per_s,step_s,elapsed_s,host_rss_mb",
            "1,0.1,5.5,,0.001,1.5,100,10,1,1,300",
        ]);
        var row = Assert.Single(MetricsLog.Read(tmp["m.csv"]));
        Assert.Equal(5.5, row.Loss);
        Assert.True(double.IsNaN(row.HostPeakRssMb));
        Assert.Null(row.DeviceUsedPeakMb);
    }
}
