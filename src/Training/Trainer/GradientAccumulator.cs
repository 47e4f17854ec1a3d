using QLoraNet.Distributed;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// The gradient of one optimizer step on one replica: the sum of its micro-batches' gradients, added along
/// <see cref="PairwiseOrder"/>'s tree instead of in arrival order (as autograd would accumulate them into .grad).
/// The tree is what makes data parallelism exact: one process accumulating 2A micro-batches adds exactly what two
/// replicas of A contiguous micro-batches each add before the replicas' sum (<see cref="RankShard"/>), and pairwise
/// sums carry a smaller rounding error (log2 A instead of A). The gradients live in <see cref="FlatGradients"/>'
/// buffers (zero before each micro-batch's backward, which writes its gradient there): after each backward,
/// <see cref="TakeMicroBatch"/> copies the buffers out as the next term of the sum and zeroes them; partial sums wait
/// on a stack, at most ceil(log2 A) + 1 copies at once (LoRA-sized: 64 MB for a 7B model with r=16 on q/k/v/o), each
/// term one tensor per buffer, so adding two is one kernel per buffer. With one micro-batch the buffers already hold
/// the sum and nothing is copied. <see cref="Finish"/> leaves the step's sum in the buffers, where the replicas' sum,
/// clipping and the optimizer read it (through each parameter's .grad view). Lives for one step, inside its dispose
/// scope.
/// </summary>
public sealed class GradientAccumulator
{
    readonly FlatGradients _gradients;
    readonly int[] _mergesAfter;
    readonly Stack<Tensor[]> _partials = new();
    int _taken;

    /// <param name="gradients">the run's gradient buffers, zero (the step's first backward writes into them).</param>
    /// <param name="microBatches">micro-batches this replica trains on in the step.</param>
    public GradientAccumulator(FlatGradients gradients, int microBatches)
    {
        _gradients = gradients;
        _mergesAfter = PairwiseOrder.MergesAfter(microBatches);
    }

    /// <summary>After a micro-batch's backward: its gradients become the next term of the sum (and the buffers are
    /// zeroed for the next backward).</summary>
    public void TakeMicroBatch()
    {
        if (_taken == _mergesAfter.Length) throw new InvalidOperationException($"the step has {_mergesAfter.Length} micro-batches; all were taken");
        _taken++;
        if (_mergesAfter.Length == 1) return;   // one micro-batch: the buffers are the sum
        using var noGrad = torch.no_grad();
        // The copies outlive this micro-batch's scope: the step's scope disposes them.
        _partials.Push(_gradients.Buffers.Select(b => b.clone().MoveToOuterDisposeScope()).ToArray());
        _gradients.Zero();
        for (int k = 0; k < _mergesAfter[_taken - 1]; k++)
        {
            var right = _partials.Pop();
            var left = _partials.Peek();
            for (int i = 0; i < left.Length; i++)
            {
                left[i].add_(right[i]);
                right[i].Dispose();
            }
        }
    }

    /// <summary>After the last micro-batch: the step's sum is in the gradient buffers (every parameter's .grad is its
    /// view); returns the buffers.</summary>
    public IReadOnlyList<Tensor> Finish()
    {
        if (_taken != _mergesAfter.Length) throw new InvalidOperationException($"{_taken} of the step's {_mergesAfter.Length} micro-batches were taken");
        if (_partials.Count > 0)
        {
            using var noGrad = torch.no_grad();
            var sum = _partials.Pop();
            for (int i = 0; i < sum.Length; i++) _gradients.Buffers[i].copy_(sum[i]);
        }
        return _gradients.Buffers;
    }
}
