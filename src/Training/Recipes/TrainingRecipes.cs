using QLoraNet.Training.Config;
using QLoraNet.Training.Trainer;

namespace QLoraNet.Training.Recipes;

/// <summary>The recipe a config's <c>training.objective</c> names: the one place `train` and the API choose it.</summary>
public static class TrainingRecipes
{
    public static TrainResult Run(TrainConfig config, TrainOptions options, ITrainingObserver observer, CancellationToken cancel) =>
        config.Training.Objective switch
        {
            TrainingObjective.Dpo => DpoRecipe.Run(config, options, observer, cancel),
            _ => LoraFinetuneRecipe.Run(config, options, observer, cancel),
        };
}
