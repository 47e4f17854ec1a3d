using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>
/// Where a run writes (relative to the current directory): checkpoints/step-N/, the resolved config, metrics.
/// Only the newest <see cref="KeepLast"/> checkpoints are kept (the best one by validation loss too, by the trainer).
/// <see cref="Tensorboard"/> also writes TensorBoard event files under <c>dir/tensorboard/</c>;
/// <see cref="PlotLogScale"/> draws loss.png's loss on a log axis.
/// </summary>
public sealed record OutputConfig(string Dir, int KeepLast = 3, bool Tensorboard = false, bool PlotLogScale = false)
{
    internal static OutputConfig Bind(ConfigSection s, string defaultDir)
    {
        var c = new OutputConfig(s.OptionalString("dir") ?? defaultDir, s.Int("keep_last", 3, 1),
            s.Bool("tensorboard", false), s.Bool("plot_log_scale", false));
        s.Finish();
        if (c.Dir.Length == 0) throw s.ErrorAt("dir", $"'{s.Full("dir")}' is empty; name a directory such as runs/my-run");
        return c;
    }

    internal YamlMappingNode ToYaml() => YamlOut.Map(("dir", YamlOut.Scalar(Dir)), ("keep_last", YamlOut.Scalar(KeepLast)),
        ("tensorboard", YamlOut.Scalar(Tensorboard)), ("plot_log_scale", YamlOut.Scalar(PlotLogScale)));
}
