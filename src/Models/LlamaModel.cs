using QLoraNet.Quant;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// The Llama decoder stack (Touvron et al. 2023, arXiv:2302.13971): token embedding, N decoder layers, final RMSNorm;
/// with <c>scaleEmbeddings</c> (Gemma) the embedding output is multiplied by sqrt(hidden) rounded to the compute dtype,
/// as transformers' GemmaModel builds its normalizer (a tensor of hidden_size**0.5 in the hidden states' dtype: in
/// bf16, sqrt(3072) = 55.43 becomes 55.5, and the checkpoints were trained with that).
/// Module names equal Hugging Face's state-dict keys under "model.": embed_tokens, layers.{i}, norm.
/// </summary>
public sealed class LlamaModel : nn.Module<Tensor, Tensor>
{
    FrozenEmbedding embed_tokens;
    readonly ModuleList<LlamaDecoderLayer> layers;
    readonly RmsNorm norm;
    readonly RotaryEmbedding rotary_emb;
    readonly ScalarType computeDType;
    readonly bool scaleEmbeddings;

    /// <param name="embedTokens">(vocab, hidden) embedding matrix, frozen; may be stored in a narrower dtype than the compute dtype.</param>
    /// <param name="computeDType">dtype of the hidden states (embedding rows are cast to it).</param>
    /// <param name="scaleEmbeddings">multiply the embedding output by sqrt(hidden) (Gemma).</param>
    public LlamaModel(string name, Tensor embedTokens, IEnumerable<LlamaDecoderLayer> layers, RmsNorm norm,
        RotaryEmbedding rotaryEmb, ScalarType computeDType, bool scaleEmbeddings = false) : base(name)
    {
        this.scaleEmbeddings = scaleEmbeddings;
        embed_tokens = new FrozenEmbedding("embed_tokens", embedTokens);
        this.layers = nn.ModuleList(layers.ToArray());
        this.norm = norm;
        rotary_emb = rotaryEmb;
        this.computeDType = computeDType;
        RegisterComponents();
        // Every module with a custom backward (frozen linears, the fused norms, RoPE and gated units) defers into this
        // model's one queue, released by whoever runs backward.
        foreach (var m in this.modules().OfType<IDefersBackwardHandles>()) m.DeferBackwardHandlesTo(BackwardHandles);
    }

    /// <summary>
    /// The queue where this model's custom backward functions (frozen linears, fused ops, layer checkpoints) leave the gradient
    /// handles they return; whoever runs backward on the model releases it after each backward pass.
    /// </summary>
    public BackwardHandles BackwardHandles { get; } = new();

    public FrozenEmbedding EmbedTokens => embed_tokens;

    /// <summary>
    /// Moves the token-embedding table to pinned host memory (training.embedding_on_host): forward gathers the batch's
    /// rows onto the device with <paramref name="gather"/> (<see cref="FrozenEmbedding.OnHost"/>). A head tied to the
    /// embedding reads the whole table every step, so the caller keeps such a model's table on the device.
    /// </summary>
    public void MoveEmbeddingToHost(HostEmbeddingGather gather)
    {
        // On a CPU the host is the device: the table already is where it would go.
        if (embed_tokens.IsOnHost || embed_tokens.OutputDevice.type != DeviceType.CUDA) return;
        var moved = FrozenEmbedding.OnHost("embed_tokens", embed_tokens.Weight, embed_tokens.OutputDevice, gather);
        register_module("embed_tokens", null!);   // null unregisters; register_module refuses to overwrite a name
        register_module("embed_tokens", moved);
        embed_tokens.Dispose();
        embed_tokens = moved;
    }

    public ModuleList<LlamaDecoderLayer> Layers => layers;
    public RotaryEmbedding Rotary => rotary_emb;
    public ScalarType ComputeDType => computeDType;

    /// <summary>Recompute each decoder layer in backward instead of keeping its activations (see
    /// <see cref="LayerCheckpoint"/>). Only takes effect while gradients are enabled and no KV cache is used.</summary>
    public bool GradientCheckpointing { get; set; }

    /// <summary>
    /// With checkpointing, how many of the last decoder layers are not recomputed (selective recomputation): each one's
    /// forward keeps its record for its backward (<see cref="LayerCheckpoint"/>). The last layer's is free (its
    /// backward runs right after the loss, where its recomputation would have allocated the same) and, alone, keeps
    /// its dense weights too; each other one holds its activations from its forward to its backward, about
    /// B·T·(4·hidden + 2·intermediate) values in the compute dtype (q, k and v count as their widths; 0.17 GiB for a
    /// 7B Llama at 2048 tokens), and saves one layer's recomputation. It dequantizes its weights in backward instead,
    /// so the count of dequantizations is unchanged. 0 recomputes every layer: the reference the parity tests hold
    /// records to. Results are the same bit for bit whatever the count.
    /// </summary>
    public int UncheckpointedLayers
    {
        get => uncheckpointedLayers;
        set => uncheckpointedLayers = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "must be 0 or more");
    }
    int uncheckpointedLayers = 1;

    /// <summary>With checkpointing, the recomputed layers keep their inputs in host memory from forward to backward
    /// (training.checkpoints_on_host; <see cref="LayerCheckpoint"/>, <see cref="HostCheckpoints"/>): one (B, T, hidden)
    /// per layer off the device, for two copies across the bus per layer and pass, overlapping the layers' work on a
    /// GPU; the same gradients.</summary>
    public bool CheckpointsOnHost { get; set; }

    HostCheckpoints? hostCheckpoints;   // made at the first forward that stashes; owns the pinned buffers and copy stream

    /// <summary>The stashes' copies so far (<see cref="HostCheckpoints"/>): brought back ahead of their backward, and
    /// on demand; null before the first forward with <see cref="CheckpointsOnHost"/>.</summary>
    public HostCheckpoints? HostCheckpointCopies => hostCheckpoints;

    protected override void Dispose(bool disposing)
    {
        if (disposing) hostCheckpoints?.Dispose();
        base.Dispose(disposing);
    }

    /// <summary>Counts this model's forward passes (each <see cref="forward(Tensor, Tensor?, Tensor?, KvCache?)"/> starts one).</summary>
    public ForwardPasses Passes { get; } = new();

    /// <summary>Gemma's embedding normalizer: hidden**0.5 as a 0-dim tensor in <paramref name="dtype"/> (rounded to it, as transformers builds it).</summary>
    public static Tensor EmbeddingScale(long hidden, ScalarType dtype, Device device) => tensor(Math.Pow(hidden, 0.5), dtype, device);

    public override Tensor forward(Tensor inputIds) => forward(inputIds, null, null, null);

    /// <param name="inputIds">(B, T) int64 token ids</param>
    /// <param name="positionIds">(B, T) int64; null = cache length + 0..T-1 in every row. Packed rows pass positions
    /// restarting at each sequence start together with <see cref="AttentionMask.BlockCausal"/>.</param>
    /// <param name="attentionMask">null = causal; else boolean, broadcastable to (B, heads, T, S), true = attend.</param>
    /// <param name="cache">KV cache for generation; advanced by T.</param>
    /// <returns>(B, T, hidden) final normed hidden states in the compute dtype.</returns>
    public Tensor forward(Tensor inputIds, Tensor? positionIds, Tensor? attentionMask, KvCache? cache)
    {
        Passes.Next();
        using var scope = NewDisposeScope();
        long b = inputIds.shape[0], t = inputIds.shape[1];
        long past = cache?.Length ?? 0;
        positionIds ??= arange(past, past + t, ScalarType.Int64, inputIds.device).unsqueeze(0).expand(b, t);
        var (cos, sin) = rotary_emb.call(positionIds);                                  // (B, T, headDim) each

        var h = EmbedInput(embed_tokens, inputIds, computeDType, scaleEmbeddings);        // (B, T, hidden)
        if (GradientCheckpointing && cache is null && torch.is_grad_enabled())
        {
            // The frozen embedding output does not require grad; the checkpoint function must see an input that
            // does, or autograd skips its backward and the first layers' adapters get no gradient.
            h.requires_grad_(true);
            // The last layers' backwards run first, right after the loss: their forwards keep their records instead
            // of being recomputed (LayerCheckpoint). A lone record (the last layer's) keeps its dense weights too:
            // the peak is then a recomputation's, which holds the same weights. With more records the peak moves to
            // the end of the forward, where the weights would cost more memory than a record (0.31 against 0.17 GiB
            // on a 7B Llama at 2048 tokens) for less time (one layer's dequantization, ~0.15 ms on an H200).
            int firstKept = layers.Count - Math.Min(UncheckpointedLayers, layers.Count);
            bool loneRecord = UncheckpointedLayers == 1;
            var pass = CheckpointsOnHost ? (hostCheckpoints ??= new HostCheckpoints()).BeginPass() : null;
            for (int i = 0; i < layers.Count; i++)
            {
                // The recomputed layers' inputs, but the embedding's output (held here anyway), go to host memory.
                var stashIn = i < firstKept && !h.is_leaf ? pass : null;
                var next = LayerCheckpoint.CallReleasingForwardHandle(h, layers[i], cos, sin, attentionMask!, BackwardHandles,
                    i >= firstKept, loneRecord && i == layers.Count - 1, stashIn!);
                // A stashed input is in host memory now: its device copy goes at once, not with the scope at the end
                // of the forward (where every layer's would still be held at the loss, the forward's peak).
                if (stashIn is not null) h.Dispose();
                h = next;
            }
        }
        else
        {
            foreach (var layer in layers) h = layer.call(h, cos, sin, attentionMask, cache);
        }
        cache?.Advance(t);
        return norm.call(h).MoveToOuterDisposeScope();
    }

    /// <summary>The decoder's input for token ids (B, T): embedding rows in the compute dtype, times sqrt(hidden) when
    /// <paramref name="scaleEmbeddings"/> (Gemma). The one place this
    /// arithmetic lives (the calibrated loader runs the decoder layer by layer from it).</summary>
    /// <param name="embedding">(vocab, hidden)</param>
    /// <param name="inputIds">(...) int64</param>
    /// <returns>(..., hidden)</returns>
    public static Tensor EmbedInput(Tensor embedding, Tensor inputIds, ScalarType computeDType, bool scaleEmbeddings)
    {
        using var scope = NewDisposeScope();
        var rows = embedding.index_select(0, inputIds.reshape(-1));                  // (N, hidden)
        return Scaled(rows.view([.. inputIds.shape, embedding.shape[1]]), computeDType, scaleEmbeddings).MoveToOuterDisposeScope();
    }

    /// <summary>The same from the model's embedding module, wherever its table lives.</summary>
    static Tensor EmbedInput(FrozenEmbedding embedding, Tensor inputIds, ScalarType computeDType, bool scaleEmbeddings)
    {
        using var scope = NewDisposeScope();
        return Scaled(embedding.forward(inputIds), computeDType, scaleEmbeddings).MoveToOuterDisposeScope();   // (B, T, hidden)
    }

    static Tensor Scaled(Tensor rows, ScalarType computeDType, bool scaleEmbeddings)
    {
        var h = rows.to(computeDType);
        return scaleEmbeddings ? h * EmbeddingScale(h.shape[^1], computeDType, h.device) : h;
    }

    /// <summary>The final norm (after the last decoder layer).</summary>
    public RmsNorm FinalNorm => norm;
}
