using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// A frozen token-embedding table: row lookup, no gradient. Ours rather than TorchSharp's native Embedding, whose
/// from_pretrained(freeze: true) still reports the weight as requiring grad (0.107) and whose weight getter wraps a
/// fresh handle each call.
/// </summary>
public sealed class FrozenEmbedding : nn.Module<Tensor, Tensor>
{
    readonly Parameter weight;

    /// <param name="weight">(vocab, hidden) on the target device, in the dtype it should be stored in.</param>
    public FrozenEmbedding(string name, Tensor weight) : base(name)
    {
        this.weight = new Parameter(weight, requires_grad: false);
        RegisterComponents();
    }

    /// <summary>(vocab, hidden)</summary>
    public Parameter Weight => weight;

    /// <param name="ids">(...) int64 token ids</param>
    /// <returns>(..., hidden)</returns>
    public override Tensor forward(Tensor ids)
    {
        using var scope = NewDisposeScope();
        var rows = weight.index_select(0, ids.reshape(-1));                        // (N, hidden)
        return rows.view([.. ids.shape, weight.shape[1]]).MoveToOuterDisposeScope();
    }
}
