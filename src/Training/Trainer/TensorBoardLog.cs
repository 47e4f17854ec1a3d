using System.Text;
using TorchSharp.Modules;
using static TorchSharp.torch.utils.tensorboard;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// TensorBoard event files of a run (<c>output.tensorboard: true</c>), under <c>output.dir/tensorboard/</c>, written
/// through TorchSharp's <see cref="TorchSharp.Modules.SummaryWriter"/> (TFRecord files of Event protobufs, as torch.utils.tensorboard
/// writes them): per step the scalars of its metrics.csv row under <c>train/</c> and <c>memory/</c>, the validation
/// loss under <c>eval/loss</c> (step 0 = the base model), and sample generations as text under <c>samples/</c>.
/// Each run (and each resume) writes a new event file in the same directory; TensorBoard reads them as one run.
/// Wall time is passed in whole seconds since the Unix epoch, TensorBoard's unit (TorchSharp's default is .NET ticks).
/// </summary>
public sealed class TensorBoardLog
{
    public const string DirectoryName = "tensorboard";

    readonly SummaryWriter _writer;

    public TensorBoardLog(string outDir) => _writer = SummaryWriter(Path.Combine(outDir, DirectoryName));

    public string Directory => _writer.LogDir;

    /// <summary>The scalars of a step's metrics row (empty/NaN figures are left out).</summary>
    public void Step(MetricsLog.Row row)
    {
        if (!row.IsStep) return;
        Scalar("train/loss", row.Loss, row.Step);
        Scalar("train/learning_rate", row.LearningRate, row.Step);
        Scalar("train/grad_norm", row.GradNorm, row.Step);
        Scalar("train/tokens_per_s", row.TokensPerSecond, row.Step);
        Scalar("train/trained_tokens", row.TrainedTokens, row.Step);
        Scalar("memory/host_rss_mb", row.HostRssMb, row.Step);
        Scalar("memory/host_peak_rss_mb", row.HostPeakRssMb, row.Step);
        if (row.DeviceUsedPeakMb is { } d) Scalar("memory/device_used_peak_mb", d, row.Step);
        if (row.DeviceAllocatedPeakMb is { } a) Scalar("memory/device_allocated_peak_mb", a, row.Step);
        if (row.DeviceReservedPeakMb is { } r) Scalar("memory/device_reserved_peak_mb", r, row.Step);
    }

    public void Validation(int step, double loss) => Scalar("eval/loss", loss, step);

    /// <summary>One text entry per prompt (tag samples/&lt;i&gt;), markdown: the prompt quoted, then the answer.</summary>
    public void Samples(IReadOnlyList<SampleGeneration> samples)
    {
        for (int i = 0; i < samples.Count; i++)
        {
            var s = samples[i];
            var text = new StringBuilder().Append("> ").Append(s.Prompt.Replace("\n", "\n> ")).Append("\n\n").Append(s.Completion).ToString();
            _writer.add_text($"samples/{i}", text, s.Step, WallTime());
        }
    }

    void Scalar(string tag, double value, int step)
    {
        if (double.IsFinite(value)) _writer.add_scalar(tag, (float)value, step, WallTime());
    }

    /// <summary>Whole seconds since the Unix epoch (TorchSharp 0.107 takes a long; left null it writes .NET ticks).</summary>
    static long WallTime() => DateTimeOffset.UtcNow.ToUnixTimeSeconds();
}
