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

    /// <summary>The step adds its micro-batches' gradients along the pairwise tree, not in arrival order: with four
    /// micro-batches it takes exactly the step computed by hand as (g0 + g1) + (g2 + g3).</summary>
    [Fact]
    public void Micro_batch_gradients_are_added_along_the_pairwise_tree()
    {
        using var run = new SmallRun(seed: 8, accumulation: 4, dropout: 0);
        var batches = Enumerable.Range(0, 4).Select(_ => run.Data.Next()).ToList();
        var loss = new CausalLmTokenMeanLoss();
        double terms = batches.Sum(b => (double)loss.Count(b));
        var trainable = run.Model.parameters().Where(p => p.requires_grad).ToList();
        var perBatch = batches.Select(b =>
        {
            (loss.Sum(run.Model, b) / terms).backward();
            run.Model.BackwardHandles.Release();
            var g = trainable.Select(p => p.grad!.clone()).ToList();
            foreach (var p in trainable) p.grad!.zero_();
            return g;
        }).ToList();
        var expected = Enumerable.Range(0, trainable.Count).Select(i =>
            perBatch[0][i].add(perBatch[1][i]).add(perBatch[2][i].add(perBatch[3][i]))).ToList();
        var sequential = Enumerable.Range(0, trainable.Count).Select(i =>
            perBatch[0][i].add(perBatch[1][i]).add(perBatch[2][i]).add(perBatch[3][i])).ToList();

        foreach (var p in trainable) p.grad = null;
        using var buffers = new FlatGradients(run.Model.named_parameters().Where(p => p.parameter.requires_grad).ToList());
        var gradients = new GradientAccumulator(buffers, 4);
        foreach (var b in batches)
        {
            (loss.Sum(run.Model, b) / terms).backward();
            run.Model.BackwardHandles.Release();
            gradients.TakeMicroBatch();
        }
        gradients.Finish();
        var got = buffers.Views;
        for (int i = 0; i < trainable.Count; i++)
        {
            // Equal values (a zero gradient's sign may differ: autograd writes -0 into a fresh .grad but +0 into a
            // zeroed one, and the sign of a zero gradient never reaches the weights).
            Assert.True(SameValues(expected[i], got[i]), $"parameter {i}");
            Assert.True(SameValues(got[i], trainable[i].grad!), $"parameter {i}: .grad holds the sum");
        }
        // Arrival order would differ somewhere, so the test can tell the trees apart.
        Assert.Contains(Enumerable.Range(0, trainable.Count), i => !SameValues(sequential[i], got[i]));

        static bool SameValues(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();
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

    /// <summary>A step whose loss is not finite updates nothing (adapters and moments keep their bits) and is not
    /// counted by the optimizer (the next update's bias corrections continue from the last applied step); the run
    /// then goes on as if it had not been tried.</summary>
    [Fact]
    public void A_non_finite_step_changes_nothing_and_is_not_counted()
    {
        bool poison = false;
        using var run = new SmallRun(seed: 7, dropout: 0, loss: new PoisonableLoss(() => poison));
        Assert.True(run.Step.Run(0, 1e-3, run.Data).Applied);
        var adapters = run.Adapters();
        var (moments, count) = run.Optimizer.Save();
        poison = true;
        var skipped = run.Step.Run(1, 1e-3, run.Data);
        Assert.False(skipped.IsFinite);
        Assert.False(skipped.Applied);
        Assert.Equal(count, run.Optimizer.Step);
        var after = run.Adapters();
        for (int i = 0; i < adapters.Length; i++) Assert.True(Bits.Same(adapters[i], after[i]), $"adapter {i}");
        var (momentsAfter, _) = run.Optimizer.Save();
        foreach (var (name, m) in moments) Assert.True(Bits.Same(m, momentsAfter[name]), name);
        poison = false;
        Assert.True(run.Step.Run(2, 1e-3, run.Data).Applied);
        Assert.Equal(count + 1, run.Optimizer.Step);
    }

    /// <summary>A step launched and read later (after the next launch, as `train` does) has the outcome and the
    /// effect of the step run and read at once; and a step the device skipped is uncounted when it is read
    /// (StepInFlight's retraction, the kernel path's counterpart of the host's skip).</summary>
    [Fact]
    public void Steps_read_one_late_equal_steps_read_at_once_and_a_skip_is_retracted_when_read()
    {
        double[] atOnce;
        Tensor[] adaptersAtOnce;
        using (var a = new SmallRun(seed: 9))
        {
            atOnce = a.Losses(3);
            adaptersAtOnce = a.Adapters();
        }
        using var b = new SmallRun(seed: 9);
        var launched = Enumerable.Range(0, 3).Select(s => b.Step.Launch(s, 1e-3, b.Data)).ToList();
        Assert.Equal(atOnce, launched.Select(l => l.Outcome.Loss));
        var adapters = b.Adapters();
        for (int i = 0; i < adapters.Length; i++) Assert.True(Bits.Same(adaptersAtOnce[i], adapters[i]), $"adapter {i}");

        int retracted = 0;
        var skipped = new StepInFlight(4, tensor(new[] { 2f, float.NaN }), 1, 10, 40, SingleReplica.Instance, () => retracted++);
        Assert.Equal(1, retracted);
        Assert.False(skipped.Outcome.Applied);
        Assert.Equal(1, retracted);
        var fine = new StepInFlight(5, tensor(new[] { 20f, 3f }), 1, 10, 40, SingleReplica.Instance, () => retracted++);
        Assert.Equal(new StepOutcome(2, 3, 40, 10), fine.Outcome);
        Assert.Equal(1, retracted);
    }

    /// <summary>The causal-LM loss, times NaN while <paramref name="poisoned"/> says so.</summary>
    sealed class PoisonableLoss(Func<bool> poisoned) : ITrainingLoss
    {
        readonly CausalLmTokenMeanLoss _inner = new();
        public long Count(Batch batch) => _inner.Count(batch);
        public Tensor Sum(LlamaForCausalLM model, Batch batch) => poisoned() ? _inner.Sum(model, batch) * float.NaN : _inner.Sum(model, batch);
    }

    sealed class Replay(IReadOnlyList<Batch> batches) : IBatchSource
    {
        int _next;
        public Batch Next() => batches[_next++ % batches.Count];
    }
}
