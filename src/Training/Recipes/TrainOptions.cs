using QLoraNet.Training.Trainer;

namespace QLoraNet.Training.Recipes;

/// <summary>Options of one invocation that are not part of the run's config.</summary>
/// <param name="Resume">null: a new run; "latest": the newest checkpoint of the output dir; else a checkpoint directory.</param>
/// <param name="Replicas">the data-parallel group this process's run belongs to (a launcher starts one run per
/// replica, each with its own group member and device); null = a single device. Only replica 0 writes files.</param>
public sealed record TrainOptions(string? Resume = null, IReplicaGroup? Replicas = null);
