namespace QLoraNet.Training.Optim;

/// <summary>
/// Learning rate as a pure function of the optimizer step (0-based), so a resumed run recomputes it exactly:
/// linear warmup from 0 to the peak over <see cref="WarmupSteps"/>, then constant, linear decay to 0, or cosine
/// decay to 0 at <see cref="TotalSteps"/> (the shapes of transformers' get_{constant,linear,cosine}_schedule_with_warmup).
/// </summary>
public sealed record LrSchedule(string Kind, double PeakLr, int WarmupSteps, int TotalSteps)
{
    public static readonly string[] Kinds = ["cosine", "linear", "constant"];

    public double At(long step)
    {
        if (WarmupSteps > 0 && step < WarmupSteps) return PeakLr * (step + 1) / WarmupSteps;
        double progress = TotalSteps <= WarmupSteps ? 1.0 : (double)(step - WarmupSteps) / (TotalSteps - WarmupSteps);
        progress = Math.Clamp(progress, 0.0, 1.0);
        return Kind switch
        {
            "constant" => PeakLr,
            "linear" => PeakLr * (1.0 - progress),
            "cosine" => PeakLr * 0.5 * (1.0 + Math.Cos(Math.PI * progress)),
            _ => throw new ArgumentException($"unknown scheduler '{Kind}'; choices: {string.Join(", ", Kinds)}"),
        };
    }
}
