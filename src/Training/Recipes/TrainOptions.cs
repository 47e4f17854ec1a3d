namespace QLoraNet.Training.Recipes;

/// <summary>Options of one invocation that are not part of the run's config.</summary>
/// <param name="Resume">null: a new run; "latest": the newest checkpoint of the output dir; else a checkpoint directory.</param>
public sealed record TrainOptions(string? Resume = null);
