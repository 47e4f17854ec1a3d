using QLoraNet.Quant.Kernels;
using QLoraNet.Training.Trainer;

namespace QLoraNet.Training.Recipes;

/// <summary>Options of one invocation that are not part of the run's config.</summary>
/// <param name="Resume">null: a new run; "latest": the newest checkpoint of the output dir; else a checkpoint directory.</param>
/// <param name="Kernels">the caller's kernel choices for the run's device (with replicas: this replica's device);
/// null = <see cref="KernelSelection.For"/> with defaults. Reported in the run summary.</param>
/// <param name="Replicas">the data-parallel group this process's run belongs to (a launcher starts one run per
/// replica, each with its own group member and device); null = a single device. Only replica 0 writes files.</param>
/// <param name="ResumeWithChanges">resume even when the config differs from the checkpoint's in keys that break
/// exact resume (<see cref="ResumeCompatibility"/>); the differences are reported and the new config recorded.</param>
public sealed record TrainOptions(string? Resume = null, KernelSelection? Kernels = null, IReplicaGroup? Replicas = null,
    bool ResumeWithChanges = false);
