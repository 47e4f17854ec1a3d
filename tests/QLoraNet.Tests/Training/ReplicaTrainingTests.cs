using QLoraNet.Tests.Distributed;
using QLoraNet.Tests.Peft;
using QLoraNet.Training.Recipes;
using QLoraNet.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Training.LoraFinetuneRecipeTests; // the recipe tests' config and recorder

namespace QLoraNet.Tests.Training;

/// <summary>Training on several replicas (threads of this process joined by the loopback TCP backend, as rank
/// processes are) against one replica accumulating their micro-batches: the step, then the whole recipe.</summary>
// In the multi-process tests' collection, never beside them (as LoopbackCollectivesTests): a full-suite CI run left
// both ranks of the step test unfinished after 120 s (then the next case's rank 1 unjoined after 30 s), while the case
// takes 1-6 s alone. The backend then waited for thread-pool threads, which the runtime adds slowly while the CPU is
// busy (see ThreadPoolMinThreads in the test project); the rendezvous still does.
[Collection("processes")]
[Trait("tier", "e2e")]
public class ReplicaTrainingTests
{
    /// <summary>W replicas (threads of this process joined by the loopback TCP backend, as processes would be) of A
    /// micro-batches each take exactly the steps of one replica accumulating W·A: same losses, same adapters, bit for
    /// bit (dropout and checkpointing on). Exact whenever the replicas' blocks are subtrees of the step's summation
    /// tree (PairwiseOrder): W a power of two, or A = 1.</summary>
    [Theory]
    [InlineData(2, 1)]
    [InlineData(2, 2)]
    [InlineData(3, 1)]
    public void W_replicas_of_A_micro_batches_take_the_steps_of_one_replica_accumulating_W_times_A(int world, int accumulation)
    {
        double[] single;
        Tensor[] singleAdapters;
        using (var one = new SmallRun(seed: 5, accumulation: world * accumulation))
        {
            single = one.Losses(2);
            singleAdapters = one.Adapters();
        }

        var replicas = InProcessRanks.Run(world, c =>
        {
            using var run = new SmallRun(seed: 5, accumulation: accumulation, replicas: new CollectiveReplicaGroup(c));
            return (Losses: run.Losses(2), Adapters: run.Adapters());
        });

        for (int rank = 0; rank < world; rank++)
        {
            Assert.Equal(single, replicas[rank].Losses);
            for (int i = 0; i < singleAdapters.Length; i++)
                Assert.True(Bits.Same(singleAdapters[i], replicas[rank].Adapters[i]), $"replica {rank}, adapter {i}");
        }
        Assert.True(singleAdapters[0].abs().sum().item<float>() > 0, "the step must have trained the adapters");
    }

    /// <summary>
    /// The recipe as a data-parallel launcher would run it: two replicas (threads of this process joined by the
    /// loopback TCP backend, as rank processes are) of one micro-batch per step train exactly as one replica accumulating two: the same losses, validation
    /// and adapter, bit for bit; only replica 0 writes files.
    /// </summary>
    [Fact]
    public void Two_replicas_run_the_recipe_of_one_replica_accumulating_their_micro_batches()
    {
        using var tmp = Paths.Temp();
        string[] shape = ["training.max_steps=2", "training.eval_every=2", "training.save_every=0", "data.val_fraction=0.01", "data.max_seq_len=64"];
        var single = new Recorder();
        var r1 = LoraFinetuneRecipe.Run(Config(tmp["single"], [.. shape, "training.gradient_accumulation_steps=2"]), new TrainOptions(), single, CancellationToken.None);

        var primary = new Recorder();
        var results = InProcessRanks.Run(2, c =>
        {
            var replica = new CollectiveReplicaGroup(c);
            ITrainingObserver observer = replica.Rank == 0 ? primary : NullObserver.Instance;
            return LoraFinetuneRecipe.Run(Config(tmp["dp"], [.. shape, "training.gradient_accumulation_steps=1"]),
                new TrainOptions(Replicas: replica), observer, CancellationToken.None);
        });

        Assert.Equal(single.Losses, primary.Losses);
        Assert.Equal(single.Validation, primary.Validation);
        Assert.Equal(r1.LastLoss, results[1].LastLoss);
        Assert.Equal(File.ReadAllBytes(Path.Combine(r1.FinalAdapter!, "adapter_model.safetensors")),
            File.ReadAllBytes(Path.Combine(results[0].FinalAdapter!, "adapter_model.safetensors")));
        Assert.Equal(new[] { 2 }, new CheckpointStore(tmp["dp"], 5).List().Select(c => c.Step));
        var state = TrainerState.Load(new CheckpointStore(tmp["dp"], 5).PathFor(2));
        Assert.Equal((2, 1, 2), (state.WorldSize, state.GradientAccumulationSteps, state.MicroBatchSize));
    }

    /// <summary>
    /// Ctrl-C on one replica stops both at the same step (their stop votes are summed) with one checkpoint, which
    /// records the world size; resumed on a single process, the run keeps the global batch (accumulation 1 becomes
    /// 2, and says so) and ends exactly where one process accumulating two from the start ends.
    /// </summary>
    [Fact]
    public void Two_replicas_checkpoint_resumes_on_one_process_with_the_accumulation_that_keeps_the_global_batch()
    {
        using var tmp = Paths.Temp();
        string[] shape = ["training.max_steps=4", "training.eval_every=0", "training.save_every=0", "data.max_seq_len=64"];
        var whole = new Recorder();
        var r1 = LoraFinetuneRecipe.Run(Config(tmp["whole"], [.. shape, "training.gradient_accumulation_steps=2"]), new TrainOptions(), whole, CancellationToken.None);

        using var cts = new CancellationTokenSource();
        var first = new Recorder(m => { if (m.Step == 2) cts.Cancel(); });
        var stopped = InProcessRanks.Run(2, c =>
        {
            var replica = new CollectiveReplicaGroup(c);
            // Only replica 0 is interrupted, as when a signal reaches one process first.
            return LoraFinetuneRecipe.Run(Config(tmp["split"], [.. shape, "training.gradient_accumulation_steps=1"]),
                new TrainOptions(Replicas: replica), replica.Rank == 0 ? first : NullObserver.Instance,
                replica.Rank == 0 ? cts.Token : CancellationToken.None);
        });
        // Step 2 is reported once step 3 is launched (each step is read after the next one starts), so the stop that
        // its report asks for comes after step 3.
        Assert.All(stopped, r => Assert.Equal((TrainStop.Interrupted, 3), (r.Stop, r.StepsDone)));

        var messages = new List<string>();
        var second = new Recorder(onMessage: messages.Add);
        var r3 = LoraFinetuneRecipe.Run(Config(tmp["split"], [.. shape, "training.gradient_accumulation_steps=1"]), new TrainOptions("latest"), second, CancellationToken.None);
        Assert.Contains(messages, m => m.Contains("on 1 this run uses 2 to keep its global batch"));
        for (int s = 1; s <= 4; s++) Assert.Equal(whole.Losses[s], s <= 3 ? first.Losses[s] : second.Losses[s]);
        Assert.Equal(File.ReadAllBytes(Path.Combine(r1.FinalAdapter!, "adapter_model.safetensors")),
            File.ReadAllBytes(Path.Combine(r3.FinalAdapter!, "adapter_model.safetensors")));
        Assert.Equal(1, TrainerState.Load(new CheckpointStore(tmp["split"], 5).PathFor(4)).WorldSize);
    }
}
