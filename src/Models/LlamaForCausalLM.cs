using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Models;

/// <summary>
/// The Llama decoder with its language-model head: next-token logits over the vocabulary.
/// Parameter paths equal Hugging Face's LlamaForCausalLM state dict ("model.layers.0.self_attn.q_proj", "lm_head").
/// With tied embeddings (tie_word_embeddings, no lm_head.weight in the checkpoint) the head reuses
/// model.embed_tokens.weight and there is no lm_head module at all.
/// </summary>
public sealed class LlamaForCausalLM : nn.Module<Tensor, Tensor>
{
    readonly LlamaModel model;
    readonly FrozenLinear? lm_head;

    public LlamaForCausalLM(string name, LlamaModel model, FrozenLinear? lmHead) : base(name)
    {
        this.model = model;
        lm_head = lmHead;
        RegisterComponents();
        lmHead?.DeferBackwardHandlesTo(model.BackwardHandles);
    }

    public LlamaModel Model => model;

    /// <summary>Where backward through this model defers its gradient handles; release after each backward pass
    /// (<see cref="Quant.BackwardHandles.Release"/>).</summary>
    public BackwardHandles BackwardHandles => model.BackwardHandles;

    /// <summary>The untied output head, or null when the head is tied to the input embedding.</summary>
    public FrozenLinear? LmHead => lm_head;

    /// <summary>Where the model lives (the caller chose it at load time).</summary>
    public Device Device => model.EmbedTokens.Weight.device;

    public override Tensor forward(Tensor inputIds) => forward(inputIds, null, null, null);

    /// <summary>Logits for every position: (B, T) ids -> (B, T, vocab) fp32. See <see cref="LlamaModel.forward(Tensor, Tensor?, Tensor?, KvCache?)"/>.</summary>
    public Tensor forward(Tensor inputIds, Tensor? positionIds, Tensor? attentionMask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var hidden = model.forward(inputIds, positionIds, attentionMask, cache);
        return Logits(hidden).MoveToOuterDisposeScope();
    }

    /// <summary>(..., hidden) -> (..., vocab) in fp32. Separate from forward so generation can project only the last
    /// position and a loss can project in chunks.</summary>
    public Tensor Logits(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        var logits = lm_head is null ? F.linear(hidden, model.EmbedTokens.Weight.to(hidden.dtype)) : lm_head.call(hidden);
        return logits.to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>An empty KV cache sized for this model, in the compute dtype on the model's device.</summary>
    public KvCache NewKvCache(long batch, long capacity)
    {
        var attn = model.Layers[0].SelfAttn;
        return new(model.Layers.Count, batch, attn.NumKvHeads, attn.HeadDim, capacity, model.ComputeDType, Device);
    }
}
