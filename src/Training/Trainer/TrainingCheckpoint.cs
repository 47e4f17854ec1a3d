using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Training.Optim;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// What a checkpoint of a LoRA run holds besides <see cref="TrainerState"/>: the adapter in peft format
/// (<c>adapter/</c>) and the optimizer's moments and step (<c>optimizer.safetensors</c>). Random state needs no
/// saving: dropout masks derive from (seed, step, micro-batch) (<see cref="TrainStep"/>).
/// </summary>
public static class TrainingCheckpoint
{
    public const string AdapterSubdir = "adapter";
    public const string OptimizerFile = "optimizer.safetensors";

    /// <summary>Writes checkpoint <c>state.Step</c> into <paramref name="store"/>; returns its directory.</summary>
    public static string Save(CheckpointStore store, TrainerState state, LlamaForCausalLM model, AdapterConfig adapterConfig,
        AdamW optimizer, int? bestStep) =>
        store.Save(state.Step, state, (dir, written) =>
        {
            AdapterFiles.Save(Path.Combine(dir, AdapterSubdir), model, adapterConfig);
            written(Path.Combine(dir, AdapterSubdir));
            var (tensors, step) = optimizer.Save();
            SafeTensors.Write(Path.Combine(dir, OptimizerFile), tensors, new Dictionary<string, string> { ["step"] = step.ToString() });
            foreach (var tensor in tensors.Values) tensor.Dispose();
            written(Path.Combine(dir, OptimizerFile));
        }, bestStep);

    /// <summary>Loads the adapter weights and the optimizer state of the checkpoint in <paramref name="dir"/>; returns its trainer state.</summary>
    public static TrainerState Load(string dir, LlamaForCausalLM model, AdapterConfig adapterConfig, AdamW optimizer)
    {
        var state = TrainerState.Load(dir);
        AdapterFiles.LoadWeights(Path.Combine(dir, AdapterSubdir), model, adapterConfig);
        using var f = SafeTensorsFile.Open(Path.Combine(dir, OptimizerFile));
        var tensors = f.Names.ToDictionary(n => n, n => f.Read(n));
        long step = long.Parse(f.Metadata.GetValueOrDefault("step") ?? state.Step.ToString());
        optimizer.Load(tensors, step);
        foreach (var tensor in tensors.Values) tensor.Dispose();
        return state;
    }
}
