using QLoraNet.Distributed;
using TorchSharp;
using Parameter = TorchSharp.Modules.Parameter;
using static TorchSharp.torch;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// The gradient of one optimizer step on one replica: the sum of its micro-batches' gradients, added along
/// <see cref="PairwiseOrder"/>'s tree instead of in arrival order (as autograd would accumulate them into .grad).
/// The tree is what makes data parallelism exact: one process accumulating 2A micro-batches adds exactly what two
/// replicas of A contiguous micro-batches each add before the replicas' sum (<see cref="RankShard"/>), and pairwise
/// sums carry a smaller rounding error (log2 A instead of A). After each micro-batch's backward,
/// <see cref="TakeMicroBatch"/> takes every trainable parameter's .grad out (so the next backward writes a fresh one
/// and autograd never adds); partial sums wait on a stack, at most ceil(log2 A) + 1 gradient copies at once
/// (LoRA-sized: 64 MB for a 7B model with r=16 on q/k/v/o). <see cref="Finish"/> puts the step's sum back into .grad,
/// where the replicas' sum, clipping and the optimizer read it. Lives for one step, inside its dispose scope.
/// </summary>
public sealed class GradientAccumulator
{
    readonly IReadOnlyList<(string Name, Parameter Param)> _parameters;
    readonly int[] _mergesAfter;
    readonly Stack<Tensor[]> _partials = new();
    int _taken;

    /// <param name="parameters">the trainable parameters, in the same order on every replica.</param>
    /// <param name="microBatches">micro-batches this replica trains on in the step.</param>
    public GradientAccumulator(IReadOnlyList<(string Name, Parameter Param)> parameters, int microBatches)
    {
        _parameters = parameters;
        _mergesAfter = PairwiseOrder.MergesAfter(microBatches);
    }

    /// <summary>After a micro-batch's backward: its gradients become the next term of the sum. Throws naming a
    /// trainable parameter the backward did not reach (replicas must agree on what they sum).</summary>
    public void TakeMicroBatch()
    {
        if (_taken == _mergesAfter.Length) throw new InvalidOperationException($"the step has {_mergesAfter.Length} micro-batches; all were taken");
        var term = new Tensor[_parameters.Count];
        for (int i = 0; i < term.Length; i++)
        {
            var (name, p) = _parameters[i];
            // The handle outlives this micro-batch's scope: the step's scope disposes it.
            term[i] = (p.grad ?? throw new InvalidOperationException(
                    $"trainable parameter '{name}' received no gradient from the loss; every trainable parameter must take part in the forward"))
                .MoveToOuterDisposeScope();
            p.grad = null;
        }
        _partials.Push(term);
        for (int k = 0; k < _mergesAfter[_taken]; k++)
        {
            var right = _partials.Pop();
            var left = _partials.Peek();
            using var noGrad = torch.no_grad();
            for (int i = 0; i < left.Length; i++)
            {
                left[i].add_(right[i]);
                right[i].Dispose();
            }
        }
        _taken++;
    }

    /// <summary>After the last micro-batch: sets every parameter's .grad to the step's sum; returns them in
    /// parameter order.</summary>
    public IReadOnlyList<Tensor> Finish()
    {
        if (_taken != _mergesAfter.Length) throw new InvalidOperationException($"{_taken} of the step's {_mergesAfter.Length} micro-batches were taken");
        var sum = _partials.Pop();
        for (int i = 0; i < sum.Length; i++) _parameters[i].Param.grad = sum[i];
        return sum;
    }
}
