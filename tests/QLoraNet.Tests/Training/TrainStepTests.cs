using QLoraNet.Models;
using QLoraNet.Tests.Peft;
using QLoraNet.Training.Data;
using QLoraNet.Training.Losses;
using QLoraNet.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Training;

/// <summary>The step `train` and `bench train` share: its mean, its randomness, its replicas.</summary>
[Trait("tier", "unit")]
public class TrainStepTests
{
    /// <summary>
    /// A run owns its randomness: another run's steps squeezed between this run's micro-batches change nothing in
    /// either. (With one process-wide generator, reseeded per step, the other run's draws would shift this run's
    /// dropout masks in the middle of its step.)
    /// </summary>
    [Fact]
    public void Two_runs_interleaved_in_one_process_give_the_losses_of_each_alone()
    {
        double[] aloneA, aloneB;
        using (var a = new SmallRun(seed: 1)) aloneA = a.Losses(2);
        using (var b = new SmallRun(seed: 2)) aloneB = b.Losses(4);

        using var runB = new SmallRun(seed: 2);
        var interleavedB = new List<double>();
        using var runA = new SmallRun(seed: 1, loss: new InterleavedLoss(() => interleavedB.Add(runB.Step.Run(interleavedB.Count, 1e-3, runB.Data).Loss)));
        var interleavedA = runA.Losses(2);

        Assert.Equal(aloneA, interleavedA);
        Assert.Equal(aloneB, interleavedB);
        Assert.NotEqual(aloneA[0], aloneB[0]);
    }

    /// <summary>The phases a profiler sees (`bench train --profile`): per micro-batch the forward, the backward with
    /// each checkpointed layer's recomputation (last layer first) inside it, then the optimizer, then the end.</summary>
    [Fact]
    public void The_step_marks_its_phases_and_checkpointed_layers_their_recomputation()
    {
        using var run = new SmallRun(seed: 3, accumulation: 2);
        var marks = new PhaseRecorder();
        run.Step.Phases = marks;
        Assert.Same(marks, run.Model.BackwardHandles.PhaseMarker);
        run.Step.Run(0, 1e-3, run.Data);
        int layers = run.Model.Model.Layers.Count;
        var micro = new[] { QLoraNet.Kernels.StepPhase.Forward, QLoraNet.Kernels.StepPhase.Backward }
            .Concat(Enumerable.Repeat(new[] { QLoraNet.Kernels.StepPhase.Recompute, QLoraNet.Kernels.StepPhase.Backward }, layers).SelectMany(x => x));
        var expected = micro.Concat(micro).Append(QLoraNet.Kernels.StepPhase.Optimizer).Append(QLoraNet.Kernels.StepPhase.Done);
        Assert.Equal(expected, marks.Seen);
        run.Step.Phases = null;
        Assert.Null(run.Model.BackwardHandles.PhaseMarker);
    }

    sealed class PhaseRecorder : QLoraNet.Kernels.IStepPhaseMarker
    {
        public List<QLoraNet.Kernels.StepPhase> Seen { get; } = [];
        public void Enter(QLoraNet.Kernels.StepPhase phase)
        {
            lock (Seen) Seen.Add(phase);
        }
    }

    /// <summary>Dropout masks are a function of (seed, step, micro-batch): the same step twice draws the same masks,
    /// another step other ones (what lets a resumed run continue exactly).</summary>
    [Fact]
    public void Dropout_masks_depend_on_the_step_not_on_what_ran_before()
    {
        using var run = new SmallRun(seed: 3, dropout: 0.5);
        using var x = torch.randn(new long[] { 1, 6, 256 }, generator: new Generator(4));
        var dropout = run.Model.modules().OfType<QLoraNet.Peft.LoraDropout>().First();
        dropout.train();
        Tensor Masked(int step, int micro)
        {
            run.Dropout.Reseed(TrainStep.MicroBatchSeed(3, step, micro));
            return dropout.forward(x);
        }
        using var first = Masked(5, 1);
        using var other = Masked(6, 1);
        using var again = Masked(5, 1);
        Assert.True(Bits.Same(first, again));
        Assert.False(Bits.Same(first, other));
        Assert.NotEqual(TrainStep.MicroBatchSeed(3, 5, 0), TrainStep.MicroBatchSeed(3, 5, 1));
    }

    /// <summary>Two replicas of one micro-batch each take exactly the step of one replica accumulating two: same
    /// losses, same adapters, bit for bit (dropout and checkpointing on).</summary>
    [Fact]
    public void Two_replicas_take_the_step_of_one_replica_accumulating_their_micro_batches()
    {
        double[] single;
        Tensor[] singleAdapters;
        using (var one = new SmallRun(seed: 5, accumulation: 2))
        {
            single = one.Losses(2);
            singleAdapters = one.Adapters();
        }

        var group = LoopbackReplicas.Group(2);
        var losses = new double[2][];
        var adapters = new Tensor[2][];
        var threads = group.Select(replica => new Thread(() =>
        {
            using var run = new SmallRun(seed: 5, accumulation: 1, replicas: replica);
            losses[replica.Rank] = run.Losses(2);
            adapters[replica.Rank] = run.Adapters();
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());

        foreach (int rank in new[] { 0, 1 })
        {
            Assert.Equal(single, losses[rank]);
            for (int i = 0; i < singleAdapters.Length; i++)
                Assert.True(Bits.Same(singleAdapters[i], adapters[rank][i]), $"replica {rank}, adapter {i}");
        }
        Assert.True(singleAdapters[0].abs().sum().item<float>() > 0, "the step must have trained the adapters");
    }

    /// <summary>The step's loss is one mean over the trained tokens of all its micro-batches (not a mean of the
    /// micro-batches' means): it equals the evaluator's mean over the same batches before the update.</summary>
    [Fact]
    public void The_step_loss_is_the_token_mean_over_all_its_micro_batches()
    {
        using var run = new SmallRun(seed: 6, dropout: 0);
        // Micro-batches with different numbers of trained tokens, so the two means differ.
        var batches = new[] { Masked(run.Data.Next(), keepFrom: 3), Masked(run.Data.Next(), keepFrom: 15) };
        double evaluated = new Evaluator(run.Model, new CausalLmTokenMeanLoss()).MeanLoss(batches);
        Assert.True(run.Model.training, "the evaluator puts the model back in training mode");
        double stepped = run.Step.Run(0, 1e-3, new Replay(batches)).Loss;
        Assert.Equal(evaluated, stepped, evaluated * 1e-6);

        static Batch Masked(Batch b, int keepFrom)
        {
            var labels = (long[])b.Labels.Clone();
            for (int i = 0; i < labels.Length; i++) if (i % b.Length < keepFrom) labels[i] = TokenizedExample.IgnoreIndex;
            return b with { Labels = labels };
        }
    }

    sealed class Replay(IReadOnlyList<Batch> batches) : IBatchSource
    {
        int _next;
        public Batch Next() => batches[_next++ % batches.Count];
    }
}
