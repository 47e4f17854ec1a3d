using QLoraNet.Formats;
using QLoraNet.Kernels;
using QLoraNet.Models;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models;

/// <summary>Each model owns the queue where its custom backward functions leave gradient handles.</summary>
[Trait("tier", "unit")]
public class BackwardHandlesTests
{
    static LlamaForCausalLM Nf4Tiny() => LlamaLoader.Load(Paths.TinyModel,
        new LoadOptions(CPU, ScalarType.Float32, LinearPolicies.Quantized(ModelFamilies.Load(Paths.TinyModel), BaseFormat.Parse("nf4"), ScalarType.Float32, CPU, ScalarType.Float32)));

    /// <summary>
    /// Backward through one model defers into that model's queue and no other, so releasing one model's handles
    /// (as a second training run in the same process would, at any moment) never disposes another's. A single
    /// process-wide queue would let run B free the gradients run A's backward is still handing to autograd.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Backward_defers_into_the_models_own_queue_only(bool checkpointing)
    {
        using var a = Nf4Tiny();
        using var b = Nf4Tiny();
        a.Model.GradientCheckpointing = checkpointing;
        // A trainable weight under every layer, so backward crosses every frozen linear (and layer checkpoint).
        a.named_parameters().Single(p => p.name == "model.layers.0.input_layernorm.weight").parameter.requires_grad = true;
        Assert.All(a.modules().OfType<FrozenLinear>(), f => Assert.Same(a.BackwardHandles, f.BackwardHandles));

        using (var scope = NewDisposeScope())
        {
            var ids = torch.tensor(new long[] { 1, 450, 377, 744, 338 }).unsqueeze(0);
            CausalLmLoss.Compute(a.forward(ids), ids).backward();
        }
        int deferred = a.BackwardHandles.Count;
        // 4 layers x 7 frozen linears on the plain path; when checkpointing, each layer checkpoint's backward first
        // releases what the backward calls before it returned (BackwardHandles.ReleaseReturned), so only the last
        // ones are left (the linears' own handles die with the recomputation's scope).
        Assert.True(deferred >= 4, $"{deferred} handles deferred");
        Assert.Equal(0, b.BackwardHandles.Count);

        b.BackwardHandles.Release();
        Assert.Equal(deferred, a.BackwardHandles.Count);
        a.BackwardHandles.Release();
        Assert.Equal(0, a.BackwardHandles.Count);
    }

    /// <summary>
    /// A backward function that starts releases the handles earlier calls on its own thread returned (they have
    /// finished, and libtorch holds its own references), never another thread's: a call there may not have returned
    /// its gradient to libtorch yet.
    /// </summary>
    [Fact]
    public void Release_returned_disposes_the_calling_threads_handles_only()
    {
        var queue = new BackwardHandles();
        var mine = queue.Defer(torch.ones(3));
        Tensor? theirs = null;
        var other = new Thread(() => theirs = queue.Defer(torch.ones(3)));
        other.Start();
        other.Join();
        Assert.Equal(2, queue.Count);

        queue.ReleaseReturned();
        Assert.True(mine.IsInvalid);
        Assert.False(theirs!.IsInvalid);
        Assert.Equal(1, queue.Count);

        queue.Release();
        Assert.True(theirs.IsInvalid);
        Assert.Equal(0, queue.Count);
    }

    /// <summary>A frozen linear that enters the model later through its slot seam (as an adapter's base does) defers
    /// into the model's queue too; on a queue of its own its handles would never be released.</summary>
    [Fact]
    public void A_frozen_linear_put_into_a_slot_defers_into_the_models_queue()
    {
        using var model = Nf4Tiny();
        string path = model.LinearPaths[0];
        using var dense = ((FrozenLinear)model.GetLinear(path)).DequantizeWeight(ScalarType.Float32);
        var replacement = new DenseFrozenLinear(dense, ScalarType.Float32);
        Assert.NotSame(model.BackwardHandles, replacement.BackwardHandles);
        model.ReplaceLinear(path, replacement);
        Assert.Same(model.BackwardHandles, replacement.BackwardHandles);
    }
}
