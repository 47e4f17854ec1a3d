using QLoraNet.Quant;
using QLoraNet.Kernels;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Peft;

/// <summary>
/// A LoRA linear on a tape (<see cref="LinearTape"/>): y = base(x) + scaling · (h Aᵀ) Bᵀ with h = dropout(x), run
/// without autograd as <see cref="LoraLinear"/>'s forward runs it (the same addmm, <see cref="Kernels.LoraPath"/>),
/// keeping h, down = h Aᵀ (N, r) and the factors in the compute dtype for backward, which is written out:
///
///     dB += scaling · dyᵀ down        (out, r)     each added into the fp32 .grad inside its GEMM where the
///     dA += scaling · (dy B)ᵀ h       (r, in)      run's kernels allow (Kernels.FusedWeightGradient)
///     dx += scaling · (dy B) A        (through dropout's mask when there is one), plus the base's dy W
///
/// The factors' gradients go into their fp32 <c>.grad</c>, as autograd's accumulation does (the flat gradient
/// buffer's views in a training run).
/// </summary>
public sealed class LoraLinearTape : LinearTape
{
    readonly LinearTape baseTape;
    readonly LoraDropout.Draw? draw;
    readonly Parameter aParam, bParam;
    readonly double scaling;
    readonly FusedWeightGradient? gradients;   // null: the reference (product, then add)
    readonly Tensor h, a, b, down;   // (..., in), (r, in), (out, r), (N, r): compute dtype

    /// <param name="aCompute">A in the compute dtype (r, in), a handle the tape takes over.</param>
    /// <param name="bCompute">B in the compute dtype (out, r), a handle the tape takes over.</param>
    /// <param name="down">h Aᵀ (N, r) when already made (this adapter's columns of a down projection shared with
    /// others, <see cref="SharedLoraDown"/>), a handle the tape takes over; null = made here.</param>
    /// <param name="gradients">how A's and B's gradients are added into their .grad (<see cref="FusedWeightGradient"/>); null = the reference.</param>
    internal LoraLinearTape(LinearTape baseTape, Tensor x, LoraDropout? dropout, Parameter a, Parameter b, Tensor aCompute, Tensor bCompute,
        double scaling, bool product, Tensor? down = null, FusedWeightGradient? gradients = null)
    {
        this.gradients = gradients;
        var computeDType = aCompute.dtype;
        this.baseTape = baseTape;
        aParam = a;
        bParam = b;
        this.scaling = scaling;
        // The tape owns what it keeps, whatever dispose scope it is made in.
        using var scope = NewDisposeScope();
        draw = dropout?.DrawFor(x);
        h = (draw?.Output ?? x).to(computeDType).DetachFromDisposeScope();
        this.a = aCompute.DetachFromDisposeScope();
        this.b = bCompute.DetachFromDisposeScope();
        this.down = (down ?? F.linear(h, this.a).reshape(-1, this.a.size(0))).DetachFromDisposeScope();  // (N, r)
        if (!product) return;
        var baseOutput = baseTape.Output!;                                                  // (..., out)
        if (baseOutput.dtype != h.dtype)
            throw new InvalidOperationException($"the base output is {baseOutput.dtype}, the adapter computes in {h.dtype}");
        // The base tape's product is read by nothing else: the sum is made in it (LoraPath.AddUp's ownsBase).
        Output = LoraPath.AddUp(baseOutput, this.down, this.b, scaling, ownsBase: true).DetachFromDisposeScope();
        baseTape.ReleaseOutput();
    }

    public override Tensor Backward(Tensor dy, Tensor? inputGrad)
    {
        var grad = baseTape.Backward(dy, inputGrad);                                        // (..., in)
        using var scope = NewDisposeScope();
        using (no_grad())
        {
            var rows = UpBackward(dy);                                                      // (N, out)
            var dyB = rows.mm(b);                                                           // (N, r)
            if (aParam.requires_grad) AddProduct(gradients, GradOf(aParam), dyB.t(), Rows(h), scaling); // (r, in)
            if (draw is null)
                Rows(grad).addmm_(dyB, a, beta: 1, alpha: (float)scaling);
            else
                grad.add_(draw.Backward(dyB.mm(a).mul_(scaling).view(grad.shape)));
        }
        return grad;
    }

    /// <summary>
    /// This adapter's part of backward when its down projection is shared (<see cref="SharedLoraDownTape"/>, which
    /// does A's side for the group): the base's input gradient, B's gradient, and scaling · dy B written into
    /// <paramref name="scaledDyB"/> (N, r), the adapter's columns of the group's (N, Σr).
    /// </summary>
    internal Tensor BackwardSharingDown(Tensor dy, Tensor? inputGrad, Tensor scaledDyB)
    {
        var grad = baseTape.Backward(dy, inputGrad);                                        // (..., in)
        using var scope = NewDisposeScope();
        using (no_grad())
        {
            var rows = UpBackward(dy);                                                      // (N, out)
            scaledDyB.addmm_(rows, b, beta: 0, alpha: (float)scaling);                      // (N, r), in place: beta 0 reads nothing
        }
        return grad;
    }

    /// <summary>B's gradient, dB += scaling · dyᵀ down; returns dy as rows (N, out) in the compute dtype.</summary>
    Tensor UpBackward(Tensor dy)
    {
        var rows = Rows(dy.dtype == h.dtype ? dy : dy.to(h.dtype));                         // (N, out)
        if (bParam.requires_grad) AddProduct(gradients, GradOf(bParam), rows.t(), down, scaling);   // (out, r)
        return rows;
    }

    /// <summary>grad += alpha · p q through <paramref name="op"/>, or its reference where there is none.</summary>
    internal static void AddProduct(FusedWeightGradient? op, Tensor grad, Tensor p, Tensor q, double alpha)
    {
        if (op is null) FusedWeightGradient.AddProductReference(grad, p, q, alpha);
        else op.AddProduct(grad, p, q, alpha);
    }

    /// <summary>grads[i] += alpha · (row block i of p) q through <paramref name="op"/>, or its reference where there is none.</summary>
    internal static void AddProducts(FusedWeightGradient? op, IReadOnlyList<Tensor> grads, Tensor p, Tensor q, double alpha)
    {
        if (op is null) FusedWeightGradient.AddProductsReference(grads, p, q, alpha);
        else op.AddProducts(grads, p, q, alpha);
    }

    /// <summary>The parameter's gradient, made (zeros) where autograd would have made it on its first accumulation.</summary>
    internal static Tensor GradOf(Parameter p)
    {
        if (p.grad is { } g) return g;
        p.grad = zeros_like(p).DetachFromDisposeScope();
        return p.grad!;
    }

    public override void Dispose()
    {
        baseTape.Dispose();
        draw?.Dispose();
        foreach (var t in new[] { h, a, b, down }) t.Dispose();
        base.Dispose();
    }
}
