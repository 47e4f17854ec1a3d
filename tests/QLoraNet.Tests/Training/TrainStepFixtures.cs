using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Tests.Models;
using QLoraNet.Training.Data;
using QLoraNet.Training.Losses;
using QLoraNet.Training.Optim;
using QLoraNet.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Training;

/// <summary>
/// One small training run on the tiny Llama, built the way the recipe builds it: fp32 on the CPU, LoRA r=4 on q/v
/// with dropout drawing from the run's own random stream, gradient checkpointing, AdamW, a <see cref="TrainStep"/>, and
/// random-token micro-batches of its own seed.
/// </summary>
sealed class SmallRun : IDisposable
{
    public LlamaForCausalLM Model { get; }
    public RandomStream Dropout { get; } = new();
    public AdamW Optimizer { get; }
    public TrainStep Step { get; }
    public IBatchSource Data { get; }

    public SmallRun(int seed, int accumulation = 2, IReplicaGroup? replicas = null, ITrainingLoss? loss = null,
        double dropout = 0.2, BaseFormat? baseFormat = null)
    {
        Model = baseFormat is null
            ? TinyLlamaFixture.Load()
            : LlamaLoader.Load(Paths.TinyModel, new LoadOptions(CPU, ScalarType.Float32, LinearPolicies.Quantized(ModelFamilies.Load(Paths.TinyModel), baseFormat, ScalarType.Float32, CPU, ScalarType.Float32)));
        Model.Model.GradientCheckpointing = true;
        LoraApplier.Apply(Model, new LoraSettings(R: 4, Alpha: 8, Dropout: dropout, TargetModules: ["q_proj", "v_proj"]), seed, Dropout);
        Optimizer = new AdamW(Model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, (Tensor)p.parameter)), 1e-3);
        Step = new TrainStep(Model, Optimizer, loss ?? new CausalLmTokenMeanLoss(), new TrainStepSettings(accumulation, 1.0, seed), Dropout, replicas);
        Data = new RandomTokenBatches(32000, rows: 2, length: 20, seed: (ulong)seed);
    }

    /// <summary>Runs steps 0..n-1 and returns their losses.</summary>
    public double[] Losses(int n) => Enumerable.Range(0, n).Select(s => Step.Run(s, 1e-3, Data).Loss).ToArray();

    /// <summary>The LoRA B factors, copied.</summary>
    public Tensor[] Adapters() => AdapterFiles.LoraModules(Model).Select(l => l.lora.B.detach().clone()).ToArray();

    public void Dispose()
    {
        Step.Dispose();
        Model.Dispose();
    }
}

/// <summary>A loss that runs something else before each micro-batch: interleaves another run into this one's step.</summary>
sealed class InterleavedLoss(Action between) : ITrainingLoss
{
    readonly CausalLmTokenMeanLoss _inner = new();
    public long Count(Batch batch) => _inner.Count(batch);

    public Tensor Sum(LlamaForCausalLM model, Batch batch)
    {
        between();
        return _inner.Sum(model, batch);
    }
}
