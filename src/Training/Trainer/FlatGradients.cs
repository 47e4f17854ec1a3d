using TorchSharp;
using Parameter = TorchSharp.Modules.Parameter;
using static TorchSharp.torch;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// The trainable parameters' gradients as views of one contiguous buffer per dtype, for the whole run (PyTorch DDP's
/// <c>gradient_as_bucket_view</c>). Each parameter's <c>.grad</c> is set once to its view; autograd then adds every
/// backward's gradient into that view in place (it steals a fresh tensor only when <c>.grad</c> is undefined), so a
/// step's gradient is already packed:
/// <list type="bullet">
/// <item>the replicas' sum is one collective per buffer on the buffer itself, with no packing into a bucket and no
/// copying back into hundreds of LoRA tensors;</item>
/// <item>zeroing and the global norm are one kernel per buffer instead of one or two per parameter (a 7B
/// model with LoRA on q/k/v/o has 256 adapter tensors: each op per tensor costs the host a native call);</item>
/// <item>the gradients keep their device addresses from step to step, so the fused AdamW's pointer table need not be
/// rebuilt and copied to the device each step.</item>
/// </list>
/// Buffers are laid out in parameter order within each dtype. A parameter that the backward does not reach keeps a
/// zero gradient (the same on every replica). The owner disposes the buffers at the end of the run.
/// </summary>
public sealed class FlatGradients : IDisposable
{
    readonly IReadOnlyList<(string Name, Parameter Param)> _parameters;
    readonly List<Tensor> _buffers = new();
    readonly Tensor[] _views;
    bool _disposed;

    /// <param name="parameters">the trainable parameters, in the same order on every replica.</param>
    public FlatGradients(IReadOnlyList<(string Name, Parameter Param)> parameters)
    {
        _parameters = parameters;
        _views = new Tensor[parameters.Count];
        using var noGrad = torch.no_grad();
        foreach (var group in Enumerable.Range(0, parameters.Count).GroupBy(i => (parameters[i].Param.dtype, Key(parameters[i].Param.device))))
        {
            var members = group.ToList();
            long total = members.Sum(i => parameters[i].Param.numel());
            var first = parameters[members[0]].Param;
            var buffer = torch.zeros(total, first.dtype, first.device).DetachFromDisposeScope();   // (Σ numel,)
            _buffers.Add(buffer);
            long offset = 0;
            foreach (int i in members)
            {
                var p = parameters[i].Param;
                long n = p.numel();
                _views[i] = buffer.narrow(0, offset, n).view(p.shape).DetachFromDisposeScope();
                offset += n;
            }
        }
        Attach();
    }

    /// <summary>One contiguous 1-D buffer per (dtype, device) of the parameters: what the collectives sum.</summary>
    public IReadOnlyList<Tensor> Buffers => _buffers;

    /// <summary>Each parameter's gradient view, in parameter order.</summary>
    public IReadOnlyList<Tensor> Views => _views;

    /// <summary>Makes every parameter's <c>.grad</c> its view again (after code that replaced or cleared it).</summary>
    public void Attach()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        for (int i = 0; i < _views.Length; i++) _parameters[i].Param.grad = _views[i];
    }

    /// <summary>Zeroes every gradient: one kernel per buffer.</summary>
    public void Zero()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var noGrad = torch.no_grad();
        foreach (var b in _buffers) b.zero_();
    }

    /// <summary>The global L2 norm of the gradients as an fp32 scalar on their device, not read: one reduction per
    /// buffer (equal to torch's norm of the per-tensor norms up to rounding). The train step's update reads it where it
    /// is (clipping and the non-finite check), and the host later with the step's loss sums (<see cref="StepInFlight"/>).</summary>
    public Tensor Norm()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var noGrad = torch.no_grad();
        if (_buffers.Count == 0) return torch.tensor(0f);
        using var scope = torch.NewDisposeScope();
        var norms = _buffers.Select(b => b.norm()).ToList();
        var total = norms.Count == 1 ? norms[0].to(ScalarType.Float32) : torch.stack(norms.Select(n => n.to(ScalarType.Float32))).norm();
        return total.MoveToOuterDisposeScope();
    }

    static string Key(Device d) => $"{d.type}:{d.index}";

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var (_, p) in _parameters) p.grad = null;
        foreach (var v in _views) v.Dispose();
        foreach (var b in _buffers) b.Dispose();
    }
}
