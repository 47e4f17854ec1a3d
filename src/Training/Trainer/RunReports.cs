using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// What a run shows besides metrics.csv, fed by the recipe's loop: TensorBoard event files
/// (<c>output.tensorboard</c>), the sample generations (<c>training.sample_prompts</c>: to the observer,
/// <see cref="SamplesFile"/> and TensorBoard), and the loss curve at the end (<see cref="LossCurve"/>, with
/// <c>output.plot_log_scale</c>). Replicas other than 0 write nothing, and generate nothing either (their model
/// equals replica 0's). One object, so the loop makes one call per event.
/// </summary>
public sealed class RunReports
{
    readonly ITrainingObserver _observer;
    readonly TensorBoardLog? _tensorboard;
    readonly SampleGenerator? _samples;
    readonly SamplesFile? _samplesFile;
    readonly string _outDir;
    readonly string _title;
    readonly bool _logScale;

    RunReports(ITrainingObserver observer, TensorBoardLog? tensorboard, SampleGenerator? samples, SamplesFile? samplesFile,
        string outDir, string title, bool logScale)
    {
        (_observer, _tensorboard, _samples, _samplesFile, _outDir, _title, _logScale) = (observer, tensorboard, samples, samplesFile, outDir, title, logScale);
    }

    /// <param name="startStep">the step the run starts after (resume: the checkpoint's), to drop later samples.</param>
    public static RunReports Create(TrainConfig config, bool writesFiles, int startStep, LlamaForCausalLM model,
        ITextTokenizer tokenizer, ModelArchitecture architecture, ITrainingObserver observer)
    {
        var t = config.Training;
        string outDir = config.Output.Dir;
        SampleGenerator? samples = null;
        SamplesFile? samplesFile = null;
        if (writesFiles && (t.SamplePrompts is not null || t.SamplePromptsFile is not null))
        {
            var prompts = SamplePrompts.Load(t.SamplePrompts, t.SamplePromptsFile, config.Data, tokenizer);
            var stopIds = architecture.Tokens.Eos.Append(tokenizer.EosId).Distinct().ToList();
            samples = new SampleGenerator(model, tokenizer, prompts, t.SampleMaxNewTokens, stopIds);
            samplesFile = new SamplesFile(Path.Combine(outDir, SamplesFile.FileName), startStep);
        }
        var tensorboard = writesFiles && config.Output.Tensorboard ? new TensorBoardLog(outDir) : null;
        string title = $"{Path.GetFileName(Path.GetFullPath(config.Model.Path))} + LoRA r={config.Lora.R}";
        return new RunReports(observer, tensorboard, samples, samplesFile, outDir, title, config.Output.PlotLogScale);
    }

    public void Step(MetricsLog.Row row) => _tensorboard?.Step(row);

    public void Validation(int step, double loss) => _tensorboard?.Validation(step, loss);

    /// <summary>Answers the sample prompts with the model as it is after <paramref name="step"/> steps.</summary>
    public void Sample(int step)
    {
        if (_samples is null) return;
        var generations = _samples.Generate(step);
        _samplesFile!.Append(generations);
        _tensorboard?.Samples(generations);
        _observer.OnSamples(generations);
    }

    /// <summary>Draws loss.png; on failure (e.g. no native graphics library) says why in one line, the CSV holds the numbers.</summary>
    public void DrawLossCurve(IReadOnlyList<MetricsLog.Row> rows)
    {
        try
        {
            LossCurve.Write(Path.Combine(_outDir, RunOutput.LossCurveFile), rows, _title, _logScale);
        }
        catch (Exception e)
        {
            var root = e;
            while (root.InnerException is not null) root = root.InnerException;
            _observer.OnMessage($"could not draw {RunOutput.LossCurveFile} ({root.GetType().Name}: {root.Message.Split('\n')[0]}); "
                + $"the numbers are in {Path.Combine(_outDir, RunOutput.MetricsFile)}");
        }
    }
}
