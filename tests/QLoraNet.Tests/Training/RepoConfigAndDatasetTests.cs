using QLoraNet.Training.Config;
using QLoraNet.Training.Data;

namespace QLoraNet.Tests.Training;

/// <summary>The committed configs and datasets load and pass the pipeline (paths made absolute via overrides).</summary>
[Trait("tier", "unit")]
public class RepoConfigAndDatasetTests
{
    static string R(string relative) => Path.Combine(Paths.RepoRoot, relative);

    static string[] AbsolutePaths(string model) =>
    [
        $"model.path={model}",
        $"data.train={R("datasets/sales/train.jsonl")}",
        $"data.validation={R("datasets/sales/validation.jsonl")}",
    ];

    [Fact]
    public void Quickstart_config_loads_and_its_data_fits_without_truncation()
    {
        var c = TrainConfig.Load(R("configs/quickstart.yaml"), AbsolutePaths(Paths.TinyModel));
        Assert.Equal(("nf4-dq", DType.Fp32), (c.Quantization.Format.ToString(), c.Quantization.ComputeDtype));
        Assert.Equal(new[] { "q_proj", "k_proj", "v_proj", "o_proj" }, c.Lora.TargetModules);
        Assert.Equal((8, 256, "runs/quickstart"), (c.Lora.R, c.Data.MaxSeqLen, c.Output.Dir));

        var data = TrainingData.Build(c.Data, TokenizerAndTemplateTests.Tok, c.Training.Seed);
        var s = data.Stats;
        Assert.Equal((0, 0, 0), (s.Truncated, s.Dropped, s.SkippedRows));
        Assert.True(s.TrainExamples >= 400 && s.ValidationExamples >= 100, s.Describe());
        Assert.True(s.PackingFill > 0.8, s.Describe());
    }

    [Fact]
    public void Llama2_7b_config_is_valid_apart_from_the_model_the_user_downloads()
    {
        var e = Assert.Throws<ConfigException>(() => TrainConfig.Load(R("configs/llama2-7b-sales.yaml"), AbsolutePaths("models/Llama-2-7b-hf").Skip(1)));
        Assert.Contains("model directory 'models/Llama-2-7b-hf' not found", e.Message);
        var c = TrainConfig.Load(R("configs/llama2-7b-sales.yaml"), AbsolutePaths(Paths.TinyModel));
        Assert.Equal((16, 32.0, 4, 4), (c.Lora.R, c.Lora.Alpha, c.Training.MicroBatchSize, c.Training.GradientAccumulationSteps));
        Assert.Equal((DeviceKind.Cuda, DType.Bf16, SchedulerKind.Cosine, true),
            (c.Model.Device, c.Quantization.ComputeDtype, c.Training.Scheduler, c.Training.GradientCheckpointing));
    }

    [Fact]
    public void Instruction_csv_and_jsonl_variants_give_the_same_examples()
    {
        DataConfig Cfg(string file) => new([R(file)], null, 0, DataFormat.Instruction, TemplateKind.Llama2Chat, null, 256,
            false, false, false, new ColumnMapping());
        var jsonl = TrainingData.Build(Cfg("datasets/sales/train_instruction.jsonl"), TokenizerAndTemplateTests.Tok, 1);
        var csv = TrainingData.Build(Cfg("datasets/sales/train_instruction.csv"), TokenizerAndTemplateTests.Tok, 1);
        Assert.Equal(jsonl.Train.Select(t => t.InputIds), csv.Train.Select(t => t.InputIds));
    }

    [Fact]
    public void General_heldout_text_loads_as_completion_rows()
    {
        var cfg = new DataConfig([R("datasets/general/heldout.jsonl")], null, 0, DataFormat.Completion, TemplateKind.None,
            null, 512, false, false, false, new ColumnMapping());
        var data = TrainingData.Build(cfg, TokenizerAndTemplateTests.Tok, 0);
        Assert.Equal(8, data.Stats.TrainExamples);
        Assert.Equal(0, data.Stats.Truncated);
    }
}
