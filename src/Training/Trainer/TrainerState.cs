using System.Text.Json;
using System.Text.Json.Serialization;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// Where a run stands after <see cref="Step"/> optimizer steps: everything besides the adapter and the optimizer
/// moments that a resumed run needs to continue exactly as if never stopped. The data position is
/// (<see cref="Epoch"/>, <see cref="MicroBatch"/>): the next micro-batch to draw. Random state needs no saving:
/// each step reseeds the generator from (seed, step). Written last into a checkpoint, so its presence marks the
/// checkpoint complete. The data position counts global micro-batches (all replicas' of a data-parallel run);
/// <see cref="WorldSize"/>, <see cref="MicroBatchSize"/> and <see cref="GradientAccumulationSteps"/> (per replica)
/// give the global batch the run stepped with, so a resume on another world size can keep it
/// (<see cref="QLoraNet.Distributed.RankShard.AccumulationToResume"/>); null in checkpoints written before they were
/// recorded.
/// </summary>
public sealed record TrainerState(
    int Step,
    int Epoch,
    int MicroBatch,
    double? BestValidationLoss,
    int EvaluationsWithoutImprovement,
    long TokensSeen,
    double? LastLoss,
    int? WorldSize = null,
    int? MicroBatchSize = null,
    int? GradientAccumulationSteps = null)
{
    public const string FileName = "trainer_state.json";

    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public static TrainerState Start => new(0, 0, 0, null, 0, 0, null);

    public void Save(string directory) =>
        File.WriteAllText(Path.Combine(directory, FileName), JsonSerializer.Serialize(this, Json));

    public static TrainerState Load(string directory)
    {
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: not found; {directory} is not a complete checkpoint", path);
        TrainerState state;
        try
        {
            state = JsonSerializer.Deserialize<TrainerState>(QLoraNet.Formats.UserFile.ReadText(path, 1 << 20, "trainer state"), Json)
                ?? throw new InvalidDataException($"{path}: empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not a trainer state ({QLoraNet.Formats.SafeText.Clip(e.Message.Split('.')[0], 120)})");
        }
        if (state.Step < 0 || state.Epoch < 0 || state.MicroBatch < 0 || state.EvaluationsWithoutImprovement < 0 || state.TokensSeen < 0)
            throw new InvalidDataException($"{path}: negative step, epoch, micro-batch or count; the checkpoint is damaged");
        return state;
    }
}
