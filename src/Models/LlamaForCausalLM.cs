using QLoraNet.Formats;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Models;

/// <summary>
/// The decoder with its language-model head: next-token logits over the vocabulary, for any family the record
/// (<see cref="Architecture"/>) describes and <see cref="ArchitectureSupport"/> admits.
/// Parameter paths equal Hugging Face's state dict ("model.layers.0.self_attn.q_proj", "lm_head").
/// With tied embeddings (tie_word_embeddings, no lm_head.weight in the checkpoint) the head reuses
/// model.embed_tokens.weight and there is no head module at all.
/// Its linears are slots (<see cref="IReplaceableLinears"/>): LoRA attaches by replacing one.
/// </summary>
public sealed class LlamaForCausalLM : nn.Module<Tensor, Tensor>, IReplaceableLinears
{
    readonly LlamaModel model;
    readonly LinearSlots head;
    readonly Dictionary<string, (LinearSlots Slots, string Name)> slotOf = new(StringComparer.Ordinal);
    readonly List<string> linearPaths = [];

    public LlamaForCausalLM(string name, ModelArchitecture architecture, LlamaModel model, FrozenLinear? lmHead) : base(name)
    {
        Architecture = architecture;
        this.model = model;
        RegisterComponents();
        head = new LinearSlots(this);
        for (int i = 0; i < model.Layers.Count; i++)
        {
            var layer = model.Layers[i];
            foreach (var (group, slots) in new[] { (LlamaDecoderLayer.AttentionName, layer.SelfAttn.Projections), (LlamaDecoderLayer.MlpName, layer.Mlp.Projections) })
                foreach (var slot in slots.Names)
                    AddPath($"{architecture.LayerPrefix(i)}{group}.{slot}", slots, slot);
        }
        if (lmHead is not null)
        {
            head.Add(architecture.HeadName, LinearRole.Output, lmHead);
            AddPath(architecture.HeadName, head, architecture.HeadName);
            lmHead.DeferBackwardHandlesTo(model.BackwardHandles);
        }
    }

    /// <summary>The family record this model was built from.</summary>
    public ModelArchitecture Architecture { get; }

    public LlamaModel Model => model;

    public ForwardPasses Passes => model.Passes;

    /// <summary>Where backward through this model defers its gradient handles; release after each backward pass
    /// (<see cref="BackwardHandles.Release"/>).</summary>
    public BackwardHandles BackwardHandles => model.BackwardHandles;

    /// <summary>The untied output head as loaded (a frozen linear), or null when the head is tied to the input
    /// embedding or its slot holds something else (an adapter).</summary>
    public FrozenLinear? LmHead => HeadPath is { } p ? GetLinear(p) as FrozenLinear : null;

    /// <summary>Where the model lives (the caller chose it at load time).</summary>
    public Device Device => model.EmbedTokens.OutputDevice;

    public IReadOnlyList<string> LinearPaths => linearPaths;

    public string? HeadPath => slotOf.ContainsKey(Architecture.HeadName) ? Architecture.HeadName : null;

    public nn.Module<Tensor, Tensor> GetLinear(string path) => Slot(path).Slots[Slot(path).Name];

    public void ReplaceLinear(string path, nn.Module<Tensor, Tensor> module)
    {
        var (slots, name) = Slot(path);
        // A frozen linear (or LoRA's fused dropout) entering the model, alone or inside a wrapper, defers into the
        // model's queue like the rest.
        foreach (var m in module.modules().Prepend(module).OfType<IDefersBackwardHandles>()) m.DeferBackwardHandlesTo(model.BackwardHandles);
        slots.Replace(name, module);
    }

    public override Tensor forward(Tensor inputIds) => forward(inputIds, null, null, null);

    /// <summary>Logits for every position: (B, T) ids -> (B, T, vocab) fp32. See <see cref="LlamaModel.forward(Tensor, Tensor?, Tensor?, KvCache?)"/>.</summary>
    public Tensor forward(Tensor inputIds, Tensor? positionIds, Tensor? attentionMask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var hidden = model.forward(inputIds, positionIds, attentionMask, cache);
        return Logits(hidden).MoveToOuterDisposeScope();
    }

    /// <summary>The final hidden states (after the last norm), (B, T) ids -> (B, T, hidden) in the compute dtype: the
    /// input of <see cref="Logits"/>, for a loss that projects them in chunks (Kernels.ChunkedCrossEntropy) instead of
    /// materialising the (B, T, vocab) fp32 logits of <see cref="forward(Tensor, Tensor?, Tensor?, KvCache?)"/>.</summary>
    public Tensor HiddenStates(Tensor inputIds, Tensor? positionIds, Tensor? attentionMask) =>
        model.forward(inputIds, positionIds, attentionMask, null);

    /// <summary>(..., hidden) -> (..., vocab) in fp32. Separate from forward so generation can project only the last
    /// position and a loss can project in chunks. With a final soft-cap c (Gemma 2) the logits are c · tanh(logits / c),
    /// computed in the compute dtype before the cast, as transformers does.</summary>
    public Tensor Logits(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        return ComputeDTypeLogits(hidden).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>(..., hidden) -> (..., vocab) in the compute dtype: <see cref="Logits"/> before its cast to fp32, for a
    /// loss that works on them without the fp32 copy (Kernels.FusedCrossEntropy).</summary>
    public Tensor ComputeDTypeLogits(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        var logits = HeadPath is null ? F.linear(hidden, model.EmbedTokens.Weight.to(hidden.dtype)) : head.Call(LinearRole.Output, hidden);
        if (Architecture.FinalLogitSoftCap is double cap) logits = (logits / cap).tanh() * cap;
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>An empty KV cache sized for this model, in the compute dtype on the model's device.</summary>
    public KvCache NewKvCache(long batch, long capacity) =>
        new(model.Layers.Count, batch, Architecture.NumKvHeads, Architecture.HeadDim, capacity, model.ComputeDType, Device);

    void AddPath(string path, LinearSlots slots, string name)
    {
        slotOf[path] = (slots, name);
        linearPaths.Add(path);
    }

    (LinearSlots Slots, string Name) Slot(string path) =>
        slotOf.TryGetValue(path, out var s) ? s
            : throw new ArgumentException($"the model has no linear '{path}'; its linears are e.g. {string.Join(", ", linearPaths.Take(3))}, ... ({linearPaths.Count} in all)");
}
