namespace QLoraNet.Evaluation;

/// <summary>Where an evaluation stands, reported through <see cref="IProgress{T}"/> after every batch (the CLI draws
/// it; training ignores it). <see cref="Eta"/> extrapolates the task's elapsed time linearly.</summary>
public sealed record EvalProgress(string Task, string Phase, int Done, int Total, TimeSpan Elapsed)
{
    public TimeSpan? Eta => Done > 0 && Done < Total ? TimeSpan.FromSeconds(Elapsed.TotalSeconds / Done * (Total - Done)) : null;
}
