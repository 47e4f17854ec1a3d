using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;
using QLoraNet.Training.Losses;
using QLoraNet.Training.Recipes;
using QLoraNet.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Training;

/// <summary>
/// DPO (`training.objective: dpo`): preference rows (one pair per row, chosen then rejected, only the final answers
/// trained), the loss against its definition computed the slow way (each conversation run alone, full logits,
/// the reference as the model with its adapters off), and the config's rules.
/// </summary>
[Trait("tier", "unit")]
public class DpoTests
{
    const string Pairs = """
        {"prompt": "How much is the Traverse 65 pack?", "chosen": "The Traverse 65 costs $299.00.", "rejected": "The Traverse 65 costs $373.75."}
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Do you ship to Canada?"}], "chosen": [{"role": "assistant", "content": "Yes, in 5-8 business days."}], "rejected": "No, we never ship abroad."}
        """;

    static DataConfig Data(string file, bool packing = false) =>
        new([file], null, 0, DataFormat.Preference, TemplateKind.Llama2Chat, null, 256, packing, false, false, new ColumnMapping());

    /// <summary>The tiny model in fp32, no quantization, LoRA r 4 on q/v (B = 0 until a test sets it).</summary>
    static BuiltModel DenseWithQvAdapter() => ModelBuilder.Build(Paths.TinyModel, new ModelBuildOptions(CPU, ScalarType.Float32,
        new DenseFormat(ScalarType.Float32), NewAdapter: new LoraSettings(R: 4, Alpha: 8, Dropout: 0, TargetModules: ["q_proj", "v_proj"]), AdapterSeed: 5));

    static (TrainingData Data, ITextTokenizer Tokenizer) Build(string text)
    {
        var tmp = Paths.Temp();
        File.WriteAllText(tmp["pairs.jsonl"], text);
        var tokenizer = TextTokenizers.Load(Paths.TinyModel);
        return (TrainingData.Build(Data(tmp["pairs.jsonl"]), tokenizer, seed: 0), tokenizer);
    }

    [Fact]
    public void A_pair_is_one_row_of_two_conversations_with_only_their_final_answers_trained()
    {
        var (data, tokenizer) = Build(Pairs);
        Assert.Equal(2, data.Train.Count);
        Assert.Equal(2, data.Stats.TrainExamples);
        foreach (var row in data.Train)
        {
            Assert.Equal(2, row.Documents);
            string Trained(int doc) => tokenizer.Decode(Enumerable.Range(0, row.Length)
                .Where(i => row.DocumentIds[i] == doc && row.Labels[i] != TokenizedExample.IgnoreIndex).Select(i => row.InputIds[i])).Trim();
            string chosen = Trained(1), rejected = Trained(2);
            Assert.True(chosen is "The Traverse 65 costs $299.00." or "Yes, in 5-8 business days.", chosen);
            Assert.True(rejected is "The Traverse 65 costs $373.75." or "No, we never ship abroad.", rejected);
            Assert.DoesNotContain("Hello", chosen);   // an earlier assistant turn of the prompt is context, not trained
            int second = Array.IndexOf(row.DocumentIds, 2);
            Assert.Equal(0, row.PositionIds[second]);  // the rejected conversation starts afresh
            Assert.Equal(row.InputIds[..second].Take(10), row.InputIds[second..].Take(10));   // the same prompt
        }
    }

    [Fact]
    public void Csv_rows_with_renamed_columns_give_the_same_pair_as_jsonl()
    {
        using var tmp = Paths.Temp();
        File.WriteAllText(tmp["p.csv"], "question,good,bad\n\"How much is the Traverse 65 pack?\",\"The Traverse 65 costs $299.00.\",\"The Traverse 65 costs $373.75.\"\n");
        File.WriteAllText(tmp["p.jsonl"], Pairs.Split('\n')[0] + "\n");
        var tokenizer = TextTokenizers.Load(Paths.TinyModel);
        var csv = TrainingData.Build(Data(tmp["p.csv"]) with { Columns = new ColumnMapping(Prompt: "question", Chosen: "good", Rejected: "bad") }, tokenizer, seed: 0);
        var jsonl = TrainingData.Build(Data(tmp["p.jsonl"]), tokenizer, seed: 0);
        Assert.Equal(jsonl.Train[0].InputIds, csv.Train[0].InputIds);
        Assert.Equal(jsonl.Train[0].Labels, csv.Train[0].Labels);
        Assert.Equal(jsonl.Train[0].DocumentIds, csv.Train[0].DocumentIds);
    }

    [Fact]
    public void Bad_preference_rows_are_named()
    {
        string ErrorOf(string line) => Assert.Throws<InvalidDataException>(() => Build(line)).Message;
        Assert.Contains("pairs.jsonl:1: missing or empty field 'rejected'", ErrorOf("""{"prompt": "q", "chosen": "a"}"""));
        Assert.Contains("'prompt' messages must end with the user message", ErrorOf("""{"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "chosen": "a", "rejected": "b"}"""));
        Assert.Contains("'chosen' must be the answer's text or messages ending with the assistant's", ErrorOf("""{"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}"""));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]   // the policy's layers recomputed in backward, after the reference pass ran in between
    public void The_loss_is_its_definition_over_separately_run_conversations_and_log_2_for_a_fresh_adapter(bool checkpointing)
    {
        var (data, _) = Build(Pairs);
        var batch = Batch.Collate(data.Train, data.PadId);
        const double beta = 0.5;
        using var built = ModelBuilder.Build(Paths.TinyModel, new ModelBuildOptions(CPU, ScalarType.Float32, new DenseFormat(ScalarType.Float32),
            GradientCheckpointing: checkpointing,
            NewAdapter: new LoraSettings(R: 4, Alpha: 8, Dropout: 0, TargetModules: ["q_proj", "v_proj", "o_proj"]), AdapterSeed: 5));
        var model = built.Model;
        var loss = new DpoLoss(beta);
        Assert.Equal(2, loss.Count(batch));

        using (no_grad()) Assert.Equal(2 * Math.Log(2), loss.Sum(model, batch).item<float>(), 6);   // B = 0: policy = reference

        using (no_grad())
        using (var g = new Generator(3))
            foreach (var (_, lora) in AdapterFiles.LoraModules(model)) lora.B.normal_(0, 0.05, generator: g);
        var adapters = AdapterFiles.LoraModules(model).SelectMany(l => new[] { l.lora.A, l.lora.B }).ToList();

        var actual = loss.Sum(model, batch);
        actual.backward();
        var grads = adapters.Select(p => p.grad!.clone()).ToArray();
        foreach (var p in adapters) p.grad = null;

        var expected = ExplicitDpo(model, data.Train, beta);
        expected.backward();
        double a = actual.item<float>(), e = expected.item<float>();
        Assert.True(Math.Abs(a - Math.Log(4)) > 0.01, $"the adapter should move the loss off log 2 per pair; got {a}");
        // The same fp32 arithmetic but for the packed row's attention (the other conversation's keys are masked to
        // exact zeros, summed in a different order): agreement to a few ulps of the log-probabilities' size.
        Assert.True(Math.Abs(a - e) < 1e-4, $"DPO loss {a} vs its definition {e}");
        // Gradients: the same bound relative to each factor's gradient norm (single elements near zero may differ more).
        for (int i = 0; i < grads.Length; i++)
        {
            double error = (grads[i] - adapters[i].grad!).norm().item<float>(), size = adapters[i].grad!.norm().item<float>();
            Assert.True(size > 0 && error <= 1e-3 * size, $"gradient {i}: |difference| {error:E2} vs |gradient| {size:E2}");
        }
    }

    [Fact]
    public void Each_loss_type_is_trls_formula_of_the_margin()
    {
        using var m = tensor(new double[] { 0, 2, 1, 3 });
        double[] Losses(DpoLossKind kind, double beta, double smoothing = 0)
        {
            using var l = new DpoLoss(beta, kind, smoothing).PairLosses(m);
            return l.data<double>().ToArray();
        }
        double LogSigmoid(double x) => -Math.Log(1 + Math.Exp(-x));
        var sigmoid = Losses(DpoLossKind.Sigmoid, 0.5, 0.1);                  // cDPO: -(1-ε) log σ(βm) - ε log σ(-βm)
        for (int i = 0; i < 4; i++)
            Assert.Equal(-0.9 * LogSigmoid(0.5 * m[i].item<double>()) - 0.1 * LogSigmoid(-0.5 * m[i].item<double>()), sigmoid[i], 12);
        Assert.Equal(Math.Log(2), Losses(DpoLossKind.Sigmoid, 0.5)[0], 12);
        Assert.Equal(new[] { 1.0, 0.0, 0.5, 0.0 }, Losses(DpoLossKind.Hinge, 0.5));      // max(0, 1 - βm)
        Assert.Equal(new[] { 1.0, 1.0, 0.0, 4.0 }, Losses(DpoLossKind.Ipo, 0.5));        // (m - 1/(2β))²
    }

    [Fact]
    public void Ipo_margins_are_of_per_token_mean_log_probabilities()
    {
        var (data, _) = Build(Pairs);
        var batch = Batch.Collate(data.Train, data.PadId);
        using var built = DenseWithQvAdapter();
        var model = built.Model;
        using (no_grad())
        using (var g = new Generator(4))
            foreach (var (_, lora) in AdapterFiles.LoraModules(model)) lora.B.normal_(0, 0.05, generator: g);
        using var noGrad = no_grad();
        var ipo = new DpoLoss(0.1, DpoLossKind.Ipo).Margins(model, batch).data<float>().ToArray();
        for (int r = 0; r < data.Train.Count; r++)
        {
            var row = data.Train[r];
            double Ratio(int doc)
            {
                double policy = LogProbability(model, row, doc).item<float>();
                double reference;
                using (model.DisableAdapters()) reference = LogProbability(model, row, doc).item<float>();
                return (policy - reference) / AnswerTokens(row, doc);
            }
            double expected = Ratio(1) - Ratio(2);
            Assert.True(Math.Abs(expected - ipo[r]) < 1e-4 * (1 + Math.Abs(expected)), $"pair {r}: IPO margin {ipo[r]} vs {expected}");
        }
    }

    [Fact]
    public void Rpo_adds_alpha_times_each_chosen_answers_mean_cross_entropy()
    {
        var (data, _) = Build(Pairs);
        var batch = Batch.Collate(data.Train, data.PadId);
        using var built = DenseWithQvAdapter();
        using var noGrad = no_grad();
        double plain = new DpoLoss(0.1).Sum(built.Model, batch).item<float>();
        double rpo = new DpoLoss(0.1, rpoAlpha: 0.5).Sum(built.Model, batch).item<float>();
        double nll = 0;
        foreach (var row in data.Train)
            nll -= LogProbability(built.Model, row, 1).item<float>() / AnswerTokens(row, 1);   // mean over the chosen answer's tokens
        Assert.True(nll > 1, $"chosen answers' cross-entropy {nll}");
        Assert.True(Math.Abs(rpo - plain - 0.5 * nll) < 1e-4 * (1 + nll), $"RPO {rpo} - DPO {plain} vs 0.5 x {nll}");
    }

    /// <summary>log π of document <paramref name="doc"/> of a pair row (1 chosen, 2 rejected), the conversation run
    /// alone through the full logits: the summed log-probability of its trained labels (a scalar with its graph).</summary>
    static Tensor LogProbability(LlamaForCausalLM model, PackedSequence row, int doc)
    {
        var at = Enumerable.Range(0, row.Length).Where(i => row.DocumentIds[i] == doc).ToArray();
        using var ids = tensor(at.Select(i => (long)row.InputIds[i]).ToArray(), [1, at.Length]);
        using var labels = tensor(at.Select(i => (long)row.Labels[i]).ToArray(), [1, at.Length]);
        return -CausalLmLoss.Sum(model.forward(ids), labels);
    }

    /// <summary>The trained labels of document <paramref name="doc"/> of a pair row.</summary>
    static int AnswerTokens(PackedSequence row, int doc) =>
        Enumerable.Range(0, row.Length).Count(i => row.DocumentIds[i] == doc && row.Labels[i] != TokenizedExample.IgnoreIndex);

    /// <summary>Σ -log σ(β((log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r)))), each conversation run alone.</summary>
    static Tensor ExplicitDpo(LlamaForCausalLM model, IReadOnlyList<PackedSequence> rows, double beta)
    {
        var total = tensor(0f);
        foreach (var row in rows)
        {
            Tensor refChosen, refRejected;
            using (no_grad())
            using (model.DisableAdapters()) (refChosen, refRejected) = (LogProbability(model, row, 1), LogProbability(model, row, 2));
            var margin = (LogProbability(model, row, 1) - refChosen) - (LogProbability(model, row, 2) - refRejected);
            total = total + nn.functional.softplus(-beta * margin);   // -log σ(x) = softplus(-x)
        }
        return total;
    }

    /// <summary>A config of the tiny model on the preference pairs, with extra data: and training: keys.</summary>
    static TrainConfig Parse(string data = "", string training = "") => TrainConfig.Parse(
        $"model:\n  path: {Paths.TinyModel}\ndata:\n  train: {Path.Combine(Paths.RepoRoot, "datasets", "sales", "preferences_train.jsonl")}\n{data}training:\n  max_steps: 1\n{training}", "x.yaml");

    static string ErrorOf(string data = "", string training = "") => Assert.Throws<ConfigException>(() => Parse(data, training)).Message;

    [Fact]
    public void The_config_pairs_the_dpo_objective_with_preference_data_and_nothing_else()
    {
        Assert.Contains("'training.objective: dpo' trains on preference pairs: set 'data.format' to preference", ErrorOf(training: "  objective: dpo\n"));
        Assert.Contains("'data.format: preference' holds chosen/rejected pairs, which only 'training.objective: dpo' trains on", ErrorOf("  format: preference\n"));
        Assert.Contains("'data.packing' must be false with data.format preference", ErrorOf("  format: preference\n  packing: true\n", "  objective: dpo\n"));
        Assert.Contains("'training.dpo_beta' applies to 'training.objective: dpo' only", ErrorOf(training: "  dpo_beta: 0.2\n"));
        Assert.Contains("'training.objective'", ErrorOf("  format: preference\n", "  objective: ppo\n"));
        Assert.Contains("'training.dpo_loss' applies to 'training.objective: dpo' only", ErrorOf(training: "  dpo_loss: ipo\n"));
        Assert.Contains("'training.dpo_label_smoothing' applies to dpo_loss sigmoid only", ErrorOf("  format: preference\n", "  objective: dpo\n  dpo_loss: hinge\n  dpo_label_smoothing: 0.1\n"));
        Assert.Contains("'training.dpo_label_smoothing' must be below 0.5", ErrorOf("  format: preference\n", "  objective: dpo\n  dpo_label_smoothing: 0.5\n"));
        Assert.Contains("'training.dpo_rpo_alpha' applies to 'training.objective: dpo' only", ErrorOf(training: "  dpo_rpo_alpha: 1\n"));
        var c = Parse("  format: preference\n", "  objective: dpo\n  dpo_beta: 0.25\n");
        Assert.Equal(0.25, c.Training.DpoBeta);
        Assert.Contains("objective: dpo", c.ToYaml());
        // An SFT config writes neither key, so configs saved in older checkpoints still compare equal on --resume.
        Assert.DoesNotContain("objective", Parse("  format: chat\n").ToYaml());
    }
}

/// <summary>The DPO recipe on the tiny model: the validation loss starts at log 2 and falls; the adapter is peft's.</summary>
[Collection("training runs")]
[Trait("tier", "e2e")]
public class DpoRecipeTests
{
    [Fact]
    public void A_dpo_run_starts_at_log_2_and_learns_to_prefer_the_chosen_answers()
    {
        using var tmp = Paths.Temp();
        var config = TrainConfig.Load(Path.Combine(Paths.RepoRoot, "configs", "quickstart-dpo.yaml"),
        [
            $"model.path={Paths.TinyModel}",
            $"data.train={Path.Combine(Paths.RepoRoot, "datasets", "sales", "preferences_train.jsonl")}",
            $"data.validation={Path.Combine(Paths.RepoRoot, "datasets", "sales", "preferences_validation.jsonl")}",
            "training.max_steps=8", "training.eval_every=8", "training.save_every=100", "data.max_seq_len=128",
            $"output.dir={tmp["run"]}",
        ]);
        var result = TrainingRecipes.Run(config, new TrainOptions(), NullObserver.Instance, CancellationToken.None);
        Assert.Equal(TrainStop.Completed, result.Stop);
        Assert.Equal(Math.Log(2), result.InitialValidationLoss!.Value, 5);
        Assert.True(result.BestValidationLoss < Math.Log(2) - 0.05, $"validation DPO loss {result.BestValidationLoss} after 8 steps");
        Assert.True(File.Exists(Path.Combine(result.FinalAdapter!, AdapterFiles.WeightsFileName)));

        // `eval --data --format preference` scores the same pairs as the run's validation: the same DPO loss (a mean
        // of per-pair values in fp64 there, of per-batch fp32 sums here), and more pairs ranked right than wrong.
        var (code, stdout, stderr) = CliRunner.Run("eval", "--model", Paths.TinyModel, "--adapter", result.FinalAdapter!,
            "--data", Path.Combine(Paths.RepoRoot, "datasets", "sales", "preferences_validation.jsonl"), "--format", "preference",
            "--template", "llama2-chat", "--max-seq-len", "128", "--json");
        Assert.True(code == 0, stderr);
        var json = System.Text.Json.JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(result.BestValidationLoss!.Value, json.GetProperty("dpo_loss").GetDouble(), 4);
        Assert.Equal(154, json.GetProperty("pairs").GetInt32());
        Assert.True(json.GetProperty("preference_accuracy").GetDouble() > 0.6, stdout);
        Assert.True(json.GetProperty("reward_margin").GetDouble() > 0, stdout);
    }
}
