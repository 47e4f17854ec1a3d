using QLoraNet.Training.Config;
using QLoraNet.Training.Losses;
using QLoraNet.Training.Trainer;

namespace QLoraNet.Training.Recipes;

/// <summary>
/// LoRA (or QLoRA) preference tuning with DPO (`training.objective: dpo`, Rafailov et al. 2023), the sibling of
/// <see cref="LoraFinetuneRecipe"/>: the same setup steps and loop (resume, accumulation, replicas, evaluation,
/// checkpoints, the peft adapter at the end) with two things of its own. Its data is preference pairs
/// (`data.format: preference`, one pair per row, <see cref="QLoraNet.Training.Data.TrainingData"/>), and its loss is
/// <see cref="DpoLoss"/>, whose reference model is the policy with its adapters switched off, so the frozen base
/// (NF4 or any other) is held once. The validation loss it reports is the DPO loss of the validation pairs: log 2
/// (0.6931) before the first step, lower as the adapter learns to prefer the chosen answers. DPO after supervised
/// fine-tuning starts from the merged SFT checkpoint (so the reference is the SFT model, as in the paper);
/// <c>lora.init_from</c> would leave the reference at the model before that adapter, and says so.
/// </summary>
public static class DpoRecipe
{
    public static TrainResult Run(TrainConfig config, TrainOptions options, ITrainingObserver observer, CancellationToken cancel)
    {
        if (config.Training.Objective != TrainingObjective.Dpo)
            throw new ArgumentException($"the DPO recipe runs 'training.objective: dpo'; this config's is {YamlNames.Of(config.Training.Objective)}");
        if (config.LoraInitFrom is { } init)
            observer.OnMessage($"lora.init_from with DPO: the reference is the model without any adapter, i.e. {config.Model.Path} before the adapter in {init}, "
                + "not that adapter; for DPO after supervised fine-tuning, merge the SFT adapter into the model (`merge`) and start from the merged checkpoint");
        return LoraFinetuneRecipe.Run(config, options, observer, cancel,
            built => new DpoLoss(config.Training.DpoBeta, config.Training.DpoLoss, config.Training.DpoLabelSmoothing, config.Training.DpoRpoAlpha,
                built.Kernels.Fused.LogitsPerChunk));
    }
}
