using QLoraNet.Kernels;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// A frozen token-embedding table: row lookup, no gradient. Ours rather than TorchSharp's native Embedding, whose
/// from_pretrained(freeze: true) still reports the weight as requiring grad (0.107) and whose weight getter wraps a
/// fresh handle each call.
/// The table lives on the model's device, or (<see cref="OnHost"/>, training.embedding_on_host) in pinned host
/// memory, from where <see cref="HostEmbeddingGather"/> copies only the looked-up rows to the device: the rows are
/// the same bits either way, and the table's device memory (0.24 GiB for a 7B Llama) is free for activations.
/// </summary>
public sealed class FrozenEmbedding : nn.Module<Tensor, Tensor>
{
    readonly Parameter weight;
    readonly HostEmbeddingGather? hostGather;

    /// <param name="weight">(vocab, hidden) on the target device, in the dtype it should be stored in.</param>
    public FrozenEmbedding(string name, Tensor weight) : this(name, weight, null, weight.device) { }

    FrozenEmbedding(string name, Tensor weight, HostEmbeddingGather? hostGather, Device outputDevice) : base(name)
    {
        this.weight = new Parameter(weight, requires_grad: false);
        this.hostGather = hostGather;
        OutputDevice = outputDevice;
        RegisterComponents();
    }

    /// <summary>
    /// The same table in pinned host memory, its rows gathered onto <paramref name="device"/> by
    /// <paramref name="gather"/>. On a CPU device the table simply stays where it is (the host is the device).
    /// </summary>
    /// <param name="table">(vocab, hidden), on any device: copied.</param>
    public static FrozenEmbedding OnHost(string name, Tensor table, Device device, HostEmbeddingGather gather)
    {
        if (device.type != DeviceType.CUDA) return new FrozenEmbedding(name, table.to(device));
        using var scope = NewDisposeScope();
        var pinned = table.detach().cpu().pin_memory();
        return new FrozenEmbedding(name, pinned.DetachFromDisposeScope(), gather, device);
    }

    /// <summary>(vocab, hidden), on <see cref="OutputDevice"/> or, when <see cref="IsOnHost"/>, pinned on the host.</summary>
    public Parameter Weight => weight;

    /// <summary>Where the looked-up rows go: the model's device.</summary>
    public Device OutputDevice { get; }

    /// <summary>The table is in host memory and only its rows reach the device.</summary>
    public bool IsOnHost => hostGather is not null;

    /// <param name="ids">(...) int64 token ids on <see cref="OutputDevice"/></param>
    /// <returns>(..., hidden) on <see cref="OutputDevice"/></returns>
    public override Tensor forward(Tensor ids)
    {
        using var scope = NewDisposeScope();
        var rows = hostGather is { } gather ? gather.Gather(weight, ids) : weight.index_select(0, ids.reshape(-1));   // (N, hidden)
        return rows.view([.. ids.shape, weight.shape[1]]).MoveToOuterDisposeScope();
    }
}
