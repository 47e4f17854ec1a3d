using QLoraNet.Kernels;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Peft;

/// <summary>
/// LoRA adapters reading one input (the attention's q, k and v on its normed hidden states) with their down
/// projections as one GEMM against the row-concatenated A = [A₀; A₁; ...] (Σr, in):
///
///     down = h Aᵀ                    (N, Σr), columns offᵢ .. offᵢ + rᵢ are adapter i's h Aᵢᵀ
///     yᵢ = baseᵢ(x) + scalingᵢ · downᵢ Bᵢᵀ
///
/// Why: each down projection reads the whole (N, in) input for an (N, r) result, a GEMM bound by that read (and by
/// its split-K reduction on a GPU); one GEMM for the group reads h once. Only where every adapter's input is the same
/// h (<see cref="CanShare"/>): no dropout drawing a mask per adapter. The concatenated A is a view of the model's batch
/// of factor casts, made once per forward pass (<see cref="LoraFactorCasts"/>), where the adapters' A's lie adjacent.
/// Arithmetic: each entry of down is the same dot product as in the adapter's own GEMM, perhaps summed in another
/// order; the rest is the adapters' own (<see cref="LoraPath.AddUp"/>, <see cref="LoraLinearTape"/>).
/// Led by its first adapter (<see cref="LoraLinear.RecordShared"/>), which owns it.
/// </summary>
internal sealed class SharedLoraDown(LoraLinear[] adapters) : IDisposable
{
    readonly long totalRank = adapters.Sum(a => (long)a.Rank);
    LoraFactorCasts? ownCasts;   // the group's own batch, where its adapters are not in one model's (built apart)

    /// <summary>Whether the group is exactly <paramref name="members"/>, in that order.</summary>
    public bool Is(IReadOnlyList<ISharedInputLinear> members) => members.SequenceEqual(adapters);

    /// <summary>
    /// Whether the adapters can share their down projection now: two or more, all enabled, none dropping its input
    /// (dropout 0, or eval mode), none over a quantization-aware base (whose update lives inside its weight), all
    /// computing in one dtype with their factors on one device and counting the same forward passes.
    /// </summary>
    public bool CanShare
    {
        get
        {
            var first = adapters[0];
            return adapters.Length >= 2 && adapters.All(a =>
                !a.Disabled && !a.DropsInput && a.BaseLayer is not QuantizationAwareLinear
                && a.ComputeDType == first.ComputeDType && a.InFeatures == first.InFeatures && a.Passes == first.Passes
                && a.A.device_type == first.A.device_type && a.A.device_index == first.A.device_index);
        }
    }

    /// <summary>Every adapter's forward(x), or null where autograd needs a graph (this path builds none).</summary>
    /// <param name="x">(..., in)</param>
    /// <returns>(..., outᵢ) per adapter.</returns>
    public Tensor[]? Forward(Tensor x)
    {
        if (KernelPath.NeedsGraph([x, .. adapters.SelectMany(a => new Tensor[] { a.A, a.B })])) return null;
        using var scope = NewDisposeScope();
        var (_, _, down) = Down(x);                                                  // (N, Σr)
        var outputs = new Tensor[adapters.Length];
        long offset = 0;
        for (int i = 0; i < adapters.Length; i++)
        {
            var lora = adapters[i];
            var b = lora.UpFactor(lora.ComputeDType);                                // (outᵢ, rᵢ)
            var y = LoraPath.AddUp(lora.BaseLayer.forward(x), down.narrow(1, offset, lora.Rank), b, lora.Scaling, ownsBase: true);
            outputs[i] = y.MoveToOuterDisposeScope();                                // (..., outᵢ)
            offset += lora.Rank;
        }
        return outputs;
    }

    /// <summary>Every adapter's <see cref="LoraLinear.Record"/> of x, on one tape group whose backward shares A's side.</summary>
    /// <param name="x">(..., in) in the compute dtype.</param>
    public LinearTapeGroup Record(Tensor x, bool keepWeight)
    {
        using var scope = NewDisposeScope();
        var (h, aCat, down) = Down(x);
        var tapes = new LoraLinearTape[adapters.Length];
        long offset = 0;
        for (int i = 0; i < adapters.Length; i++)
        {
            var lora = adapters[i];
            long r = lora.Rank;
            // Adapter i's own tape over its rows of A and its columns of down: views, no copies.
            tapes[i] = new LoraLinearTape(lora.BaseLayer.Record(x, keepWeight), h, null, lora.A, lora.B,
                aCat.narrow(0, offset, r), lora.UpFactor(lora.ComputeDType), lora.Scaling, product: true,
                down: down.narrow(1, offset, r), gradients: lora.GradientKernel);
            offset += r;
        }
        return new SharedLoraDownTape(tapes, [.. adapters.Select(a => a.A)], h, aCat, adapters[0].GradientKernel);
    }

    /// <summary>The input in the compute dtype, the concatenated A and the group's down projection, in the caller's scope.</summary>
    (Tensor H, Tensor ACat, Tensor Down) Down(Tensor x)
    {
        var dtype = adapters[0].ComputeDType;
        var h = x.to(dtype);                                                         // (..., in)
        var aCat = ConcatenatedA(dtype);                                             // (Σr, in)
        var down = F.linear(h, aCat).reshape(-1, totalRank);                         // (N, Σr)
        return (h, aCat, down);
    }

    /// <summary>[A₀; A₁; ...] (Σr, in) in <paramref name="dtype"/>: where the adapters count passes, rows of the
    /// batch of casts made once per forward pass (the model's, or the group's own when its adapters were built apart
    /// from a model); otherwise concatenated in fp32 and cast on every call.</summary>
    Tensor ConcatenatedA(ScalarType dtype)
    {
        if (adapters[0].Casts is not { } casts)
        {
            using (no_grad()) return torch.cat([.. adapters.Select(a => (Tensor)a.A)]).to(dtype);
        }
        if (!adapters.All(a => a.Casts == casts)) casts = ownCasts ??= GroupCasts(casts.Passes);
        return casts.ConcatenatedA(adapters, dtype);
    }

    LoraFactorCasts GroupCasts(Models.ForwardPasses passes)
    {
        var casts = new LoraFactorCasts(passes);
        foreach (var a in adapters) casts.Add(a);
        return casts;
    }

    public void Dispose()
    {
        ownCasts?.Dispose();
        ownCasts = null;
    }
}
