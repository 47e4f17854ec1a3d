using QLoraNet.Models;
using QLoraNet.Training.Data;
using QLoraNet.Training.Losses;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Training;

/// <summary>
/// Another loss with its backward moved onto a thread of its own, where no dispose scope is open: what libtorch does
/// with a CUDA graph (its autograd engine runs CUDA nodes, our custom backward functions included, on a device
/// thread), done on the CPU, where the engine would otherwise run every node on the thread that called backward,
/// inside the train step's dispose scope. There a tensor that a backward function creates and neither disposes nor
/// defers is disposed by the step's scope and never shows; on the device thread it waits for the garbage collector.
/// The forward (the inner loss's graph) is built on the caller's thread in its scopes, as on CUDA; the value is the
/// inner loss's, and the gradients reach the same parameters, so the step computes what it computes with the inner
/// loss. <see cref="LiveOnBackwardThreads"/> counts the tensor handles created on those threads and still alive when
/// each backward ended, less any of the caller's that they disposed (TorchSharp keeps its counts per thread): added to
/// the caller's thread count, it is the number of live tensor handles.
/// </summary>
sealed class BackwardOnDeviceThreadLoss(ITrainingLoss inner) : ITrainingLoss
{
    long _liveOnBackwardThreads;

    /// <summary>Tensor handles left alive by the backward threads so far (their per-thread live counts, summed).</summary>
    public long LiveOnBackwardThreads => Interlocked.Read(ref _liveOnBackwardThreads);

    public long Count(Batch batch) => inner.Count(batch);

    public Tensor Sum(LlamaForCausalLM model, Batch batch)
    {
        var sum = inner.Sum(model, batch);
        // The engine reaches OnOwnThread through this leaf; the inner graph is reached only by OnOwnThread's backward.
        var trigger = zeros(1).requires_grad_(true);
        return OnOwnThread.apply(trigger, new InnerLoss(sum, this));
    }

    void Add(long live) => Interlocked.Add(ref _liveOnBackwardThreads, live);

    /// <summary>The inner sum, passed as plain data so that autograd draws no edge to its graph.</summary>
    sealed record InnerLoss(Tensor Sum, BackwardOnDeviceThreadLoss Owner);

    sealed class OnOwnThread : autograd.SingleTensorFunction<OnOwnThread>
    {
        public override string Name => nameof(OnOwnThread);

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var loss = (InnerLoss)vars[1];
            ctx.save_data("inner", loss);
            return loss.Sum.detach().clone();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var loss = (InnerLoss)ctx.get_data("inner");
            Exception? failed = null;
            var thread = new Thread(() =>
            {
                try
                {
                    torch.autograd.backward([loss.Sum], [gradOutput]);
                    loss.Owner.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount);
                }
                catch (Exception e)
                {
                    failed = e;
                }
            });
            thread.Start();
            thread.Join();
            gradOutput.Dispose();
            if (failed is not null) throw new InvalidOperationException("backward on its own thread failed", failed);
            return [null!, null!];
        }
    }
}
