using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>
/// The optimisation loop. Defaults follow the QLoRA paper's 7B/13B setup (Dettmers et al. 2023, appendix B):
/// AdamW, lr 2e-4, constant schedule after a 3% warmup, max grad norm 0.3, no weight decay, effective batch 16,
/// gradient checkpointing on. A step is one optimizer update of <see cref="MicroBatchSize"/> x
/// <see cref="GradientAccumulationSteps"/> sequences. <see cref="MaxSteps"/>, when set, wins over
/// <see cref="Epochs"/> (as in Hugging Face's Trainer). Intervals are in steps; 0 turns a periodic action off
/// (evaluation and saving still happen once at the end). Early stopping counts evaluations without a new best
/// validation loss and needs validation data. Sample prompts (<see cref="SamplePrompts"/> inline, or
/// <see cref="SamplePromptsFile"/>: .txt one prompt a line, or .jsonl rows with "prompt" or chat "messages") are
/// answered greedily (up to <see cref="SampleMaxNewTokens"/> tokens) before training and at every evaluation.
/// With gradient checkpointing, the last <see cref="UncheckpointedLayers"/> decoder layers keep their activations
/// instead of being recomputed (selective recomputation: the last one's is free, each other trades about
/// B·T·(4·hidden + 2·intermediate) values of device memory for one layer's recomputation; results are unchanged).
/// <see cref="EmbeddingOnHost"/> keeps the frozen token-embedding table in pinned host memory on a GPU, copying only
/// each batch's rows to the device (the same values; vocab·hidden values of device memory freed, for ~2·hidden bytes
/// a token across PCIe); a head tied to the embedding keeps it on the device (an error names the key).
/// With checkpointing, <see cref="KeepDequantizedWeights"/> false makes a recomputed layer dequantize its weights again
/// for its backward instead of keeping the dense copies its recomputation made, and dequantizes gate and up one at a time
/// instead of into one stacked matrix (the same values up to a GEMM's summation order; a layer's dense weights, ~0.4 GiB
/// for a 7B layer, no longer held through its backward, for one more dequantization each).
/// With checkpointing, <see cref="CheckpointsOnHost"/> keeps each recomputed layer's input in host memory between its
/// forward and its backward (B·T·hidden values per layer off the device, for two copies across the bus per layer and
/// micro-batch, overlapping the compute on a GPU: Models.HostCheckpoints; the same gradients).
/// <see cref="OptimizerOnHost"/> keeps AdamW's two moments in host memory, paged through a small device window for
/// each update (the same update bit for bit; 8 bytes per trainable parameter off the device, for 16 bytes per
/// parameter across PCIe each step; ZeRO-Offload's optimizer offload, for the state alone).
/// </summary>
public sealed record TrainingConfig(
    int Epochs = 1,
    int? MaxSteps = null,
    int MicroBatchSize = 4,
    int GradientAccumulationSteps = 4,
    double LearningRate = 2e-4,
    SchedulerKind Scheduler = SchedulerKind.Constant,
    int? WarmupSteps = null,
    double WarmupRatio = 0.03,
    double WeightDecay = 0.0,
    double AdamBeta1 = 0.9,
    double AdamBeta2 = 0.999,
    double AdamEpsilon = 1e-8,
    double MaxGradNorm = 0.3,
    bool GradientCheckpointing = true,
    int UncheckpointedLayers = 1,
    bool EmbeddingOnHost = false,
    bool OptimizerOnHost = false,
    bool KeepDequantizedWeights = true,
    bool CheckpointsOnHost = false,
    int Seed = 42,
    int LogEvery = 10,
    int EvalEvery = 100,
    int SaveEvery = 100,
    int? EarlyStoppingPatience = null,
    IReadOnlyList<string>? SamplePrompts = null,
    string? SamplePromptsFile = null,
    int SampleMaxNewTokens = 48,
    TrainingObjective Objective = TrainingObjective.Sft,
    double DpoBeta = 0.1,
    DpoLossKind DpoLoss = DpoLossKind.Sigmoid,
    double DpoLabelSmoothing = 0,
    double DpoRpoAlpha = 0)
{
    /// <summary>Extensions a sample prompts file may have.</summary>
    public static readonly IReadOnlyList<string> SamplePromptExtensions = [".txt", ".jsonl"];

    /// <summary>Optimizer steps of the run, given the number of micro-batches in one epoch and the number of
    /// data-parallel replicas (each step takes gradient_accumulation_steps micro-batches per replica).</summary>
    public int TotalSteps(int microBatchesPerEpoch, int replicas = 1) =>
        MaxSteps ?? Math.Max(1, (int)Math.Ceiling((double)Epochs * microBatchesPerEpoch / ((long)GradientAccumulationSteps * replicas)));

    /// <summary>Warmup length in steps: <see cref="WarmupSteps"/> if set, else the ratio of the total.</summary>
    public int Warmup(int totalSteps) => WarmupSteps ?? (int)Math.Round(WarmupRatio * totalSteps);

    internal static TrainingConfig Bind(ConfigSection s)
    {
        var d = new TrainingConfig();
        var c = new TrainingConfig(
            Epochs: s.Int("epochs", d.Epochs, 1),
            MaxSteps: s.OptionalInt("max_steps", 1),
            MicroBatchSize: s.Int("micro_batch_size", d.MicroBatchSize, 1),
            GradientAccumulationSteps: s.Int("gradient_accumulation_steps", d.GradientAccumulationSteps, 1),
            LearningRate: s.Double("learning_rate", d.LearningRate, 0, 1, minExclusive: true),
            Scheduler: s.Enum("scheduler", d.Scheduler),
            WarmupSteps: s.OptionalInt("warmup_steps", 0),
            WarmupRatio: s.Double("warmup_ratio", d.WarmupRatio, 0, 1),
            WeightDecay: s.Double("weight_decay", d.WeightDecay, 0),
            AdamBeta1: s.Double("adam_beta1", d.AdamBeta1, 0, 1),
            AdamBeta2: s.Double("adam_beta2", d.AdamBeta2, 0, 1),
            AdamEpsilon: s.Double("adam_epsilon", d.AdamEpsilon, 0, minExclusive: true),
            MaxGradNorm: s.Double("max_grad_norm", d.MaxGradNorm, 0),
            GradientCheckpointing: s.Bool("gradient_checkpointing", d.GradientCheckpointing),
            UncheckpointedLayers: s.Int("uncheckpointed_layers", d.UncheckpointedLayers, 0, 100_000),
            EmbeddingOnHost: s.Bool("embedding_on_host", d.EmbeddingOnHost),
            OptimizerOnHost: s.Bool("optimizer_on_host", d.OptimizerOnHost),
            KeepDequantizedWeights: s.Bool("keep_dequantized_weights", d.KeepDequantizedWeights),
            CheckpointsOnHost: s.Bool("checkpoints_on_host", d.CheckpointsOnHost),
            Seed: s.Int("seed", d.Seed, 0),
            LogEvery: s.Int("log_every", d.LogEvery, 1),
            EvalEvery: s.Int("eval_every", d.EvalEvery, 0),
            SaveEvery: s.Int("save_every", d.SaveEvery, 0),
            EarlyStoppingPatience: s.OptionalInt("early_stopping_patience", 1));
        var (promptsFile, prompts) = s.OptionalStringOrList("sample_prompts");
        c = c with { SamplePrompts = prompts, SamplePromptsFile = promptsFile, SampleMaxNewTokens = s.Int("sample_max_new_tokens", d.SampleMaxNewTokens, 1, 4096) };
        c = c with
        {
            Objective = s.Enum("objective", d.Objective), DpoBeta = s.Double("dpo_beta", d.DpoBeta, 0, 1000, minExclusive: true),
            DpoLoss = s.Enum("dpo_loss", d.DpoLoss), DpoLabelSmoothing = s.Double("dpo_label_smoothing", d.DpoLabelSmoothing, 0, 0.5),
            DpoRpoAlpha = s.Double("dpo_rpo_alpha", d.DpoRpoAlpha, 0, 1000),
        };
        string? dpoKeyGiven = s.OptionalDouble("dpo_beta") != null ? "dpo_beta"
            : s.OptionalString("dpo_loss") != null ? "dpo_loss"
            : s.OptionalDouble("dpo_label_smoothing") != null ? "dpo_label_smoothing"
            : s.OptionalDouble("dpo_rpo_alpha") != null ? "dpo_rpo_alpha" : null;
        bool ratioGiven = s.OptionalDouble("warmup_ratio") != null;
        bool keptGiven = s.OptionalInt("uncheckpointed_layers") != null;
        bool keepWeightsGiven = s.OptionalBool("keep_dequantized_weights") != null;
        bool checkpointsOnHostGiven = s.OptionalBool("checkpoints_on_host") != null;
        s.Finish();
        if (prompts is { Count: 0 } || (prompts?.Any(p => p.Trim().Length == 0) ?? false))
            throw s.ErrorAt("sample_prompts", $"'{s.Full("sample_prompts")}' must be a file or a list of non-empty prompts");
        if (promptsFile != null)
        {
            if (!SamplePromptExtensions.Contains(Path.GetExtension(promptsFile).ToLowerInvariant()))
                throw s.ErrorAt("sample_prompts", $"'{s.Full("sample_prompts")}' file {QLoraNet.Formats.SafeText.Quote(promptsFile, 200)} must be {string.Join(" or ", SamplePromptExtensions)} (or give a list of prompts)");
            if (!File.Exists(promptsFile))
                throw s.ErrorAt("sample_prompts", $"'{s.Full("sample_prompts")}' file {QLoraNet.Formats.SafeText.Quote(promptsFile, 200)} not found (relative paths resolve from the current directory {Environment.CurrentDirectory})");
        }
        if (dpoKeyGiven is not null && c.Objective != TrainingObjective.Dpo)
            throw s.ErrorAt(dpoKeyGiven, $"'{s.Full(dpoKeyGiven)}' applies to '{s.Full("objective")}: dpo' only; this run's objective is {YamlNames.Of(c.Objective)}");
        if (c.DpoLabelSmoothing >= 0.5)
            throw s.ErrorAt("dpo_label_smoothing", $"'{s.Full("dpo_label_smoothing")}' must be below 0.5 (the share of pairs assumed mislabelled); got {c.DpoLabelSmoothing}");
        if (c.DpoLabelSmoothing > 0 && c.DpoLoss != DpoLossKind.Sigmoid)
            throw s.ErrorAt("dpo_label_smoothing", $"'{s.Full("dpo_label_smoothing")}' applies to dpo_loss sigmoid only (cDPO); this run's is {YamlNames.Of(c.DpoLoss)}");
        if (keptGiven && !c.GradientCheckpointing)
            throw s.ErrorAt("uncheckpointed_layers", $"'{s.Full("uncheckpointed_layers")}' applies with '{s.Full("gradient_checkpointing")}: true' only (without checkpointing no layer is recomputed); drop one of the two");
        if (keepWeightsGiven && !c.GradientCheckpointing)
            throw s.ErrorAt("keep_dequantized_weights", $"'{s.Full("keep_dequantized_weights")}' applies with '{s.Full("gradient_checkpointing")}: true' only (without checkpointing no layer is recomputed); drop one of the two");
        if (checkpointsOnHostGiven && !c.GradientCheckpointing)
            throw s.ErrorAt("checkpoints_on_host", $"'{s.Full("checkpoints_on_host")}' applies with '{s.Full("gradient_checkpointing")}: true' only (without checkpointing there are no checkpoints); drop one of the two");
        if (c.WarmupSteps != null && ratioGiven)
            throw s.ErrorAt("warmup_ratio", $"set '{s.Full("warmup_steps")}' or '{s.Full("warmup_ratio")}', not both");
        return c;
    }

    internal YamlMappingNode ToYaml() => YamlOut.Map(
        ("epochs", YamlOut.Scalar(Epochs)), ("max_steps", YamlOut.Scalar(MaxSteps)),
        ("micro_batch_size", YamlOut.Scalar(MicroBatchSize)),
        ("gradient_accumulation_steps", YamlOut.Scalar(GradientAccumulationSteps)),
        ("learning_rate", YamlOut.Scalar(LearningRate)), ("scheduler", YamlOut.Scalar(Scheduler)),
        ("warmup_steps", YamlOut.Scalar(WarmupSteps)),
        // The resolved config names one warmup; writing both would make it fail to load again.
        ("warmup_ratio", WarmupSteps == null ? YamlOut.Scalar(WarmupRatio) : null),
        ("weight_decay", YamlOut.Scalar(WeightDecay)),
        ("adam_beta1", YamlOut.Scalar(AdamBeta1)), ("adam_beta2", YamlOut.Scalar(AdamBeta2)),
        ("adam_epsilon", YamlOut.Scalar(AdamEpsilon)), ("max_grad_norm", YamlOut.Scalar(MaxGradNorm)),
        ("gradient_checkpointing", YamlOut.Scalar(GradientCheckpointing)),
        // Written when not the default, so that the configs saved in checkpoints before the key existed compare equal.
        ("uncheckpointed_layers", UncheckpointedLayers != 1 ? YamlOut.Scalar(UncheckpointedLayers) : null),
        ("embedding_on_host", EmbeddingOnHost ? YamlOut.Scalar(EmbeddingOnHost) : null),
        ("optimizer_on_host", OptimizerOnHost ? YamlOut.Scalar(OptimizerOnHost) : null),
        ("keep_dequantized_weights", !KeepDequantizedWeights ? YamlOut.Scalar(KeepDequantizedWeights) : null),
        ("checkpoints_on_host", CheckpointsOnHost ? YamlOut.Scalar(CheckpointsOnHost) : null),
        ("seed", YamlOut.Scalar(Seed)),
        ("log_every", YamlOut.Scalar(LogEvery)), ("eval_every", YamlOut.Scalar(EvalEvery)),
        ("save_every", YamlOut.Scalar(SaveEvery)),
        ("early_stopping_patience", YamlOut.Scalar(EarlyStoppingPatience)),
        ("sample_prompts", SamplePrompts is not null ? YamlOut.List(SamplePrompts) : YamlOut.Scalar(SamplePromptsFile)),
        ("sample_max_new_tokens", YamlOut.Scalar(SampleMaxNewTokens)),
        // Written for DPO only, so that the configs saved in checkpoints before the key existed still compare equal
        // (ResumeCompatibility treats an added key as a change).
        ("objective", Objective != TrainingObjective.Sft ? YamlOut.Scalar(Objective) : null),
        ("dpo_beta", Objective == TrainingObjective.Dpo ? YamlOut.Scalar(DpoBeta) : null),
        ("dpo_loss", Objective == TrainingObjective.Dpo ? YamlOut.Scalar(DpoLoss) : null),
        ("dpo_label_smoothing", Objective == TrainingObjective.Dpo ? YamlOut.Scalar(DpoLabelSmoothing) : null),
        ("dpo_rpo_alpha", Objective == TrainingObjective.Dpo ? YamlOut.Scalar(DpoRpoAlpha) : null));
}
