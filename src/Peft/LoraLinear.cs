using QLoraNet.Kernels;
using QLoraNet.Models;
using QLoraNet.Quant;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// A frozen base linear with a trainable low-rank update (LoRA, Hu et al. 2021, eq. 3), as QLoRA (Dettmers et al.
/// 2023, eq. 5) uses it on a quantized base:
///
///     y = base(x) + scaling · B(A(dropout(x)))        A [r, in] Kaiming-uniform, B [out, r] zeros
///
/// The up-projection, the scaling and the addition are one GEMM whose epilogue reads the base output
/// (<see cref="LoraPath.AddLowRank"/>), instead of three passes over the (tokens, out) output.
/// B = 0 at the start, so the wrapped layer begins exactly as the base. A and B live in fp32 so that AdamW's
/// small updates are not rounded away, and are cast to the base's compute dtype for the matmuls (bf16 on GPU: the
/// adapter path then runs at the base's speed; peft without autocast computes it in the adapter's dtype instead).
/// Child names follow peft: `base_layer`, `lora_A`, `lora_B`, `lora_dropout`. With <see cref="Disabled"/> set the
/// module computes base(x) alone (torchtune's LoRALinear.disabled; peft's disable_adapter): a reference model for
/// free, as DPO needs it (<see cref="AdapterSwitch.DisableAdapters"/>). Over a <see cref="QuantizationAwareLinear"/>
/// base the update is trained inside the merged weight instead (quantization-aware training, see AwareForward).
/// Adapters reading one input (q/k/v) can run their down projections as one GEMM where no graph is needed
/// (<see cref="ISharedInputLinear"/>, <see cref="SharedLoraDown"/>).
/// </summary>
public sealed class LoraLinear : nn.Module<Tensor, Tensor>, ITapedLinear, ISharedInputLinear, IBareFrozenLinear
{
    private readonly FrozenLinear base_layer;
    private readonly LoraFactor lora_A;
    private readonly LoraFactor lora_B;
    private readonly nn.Module<Tensor, Tensor> lora_dropout;

    /// <param name="baseLayer">the frozen linear to wrap; it becomes this module's child `base_layer`.</param>
    /// <param name="r">the rank of the update.</param>
    /// <param name="alpha">LoRA's alpha; the update is multiplied by alpha/r (or alpha/sqrt(r) with rsLoRA).</param>
    /// <param name="dropout">dropout probability on A's input (0 = none).</param>
    /// <param name="useRsLora">scale by alpha/sqrt(r) (rsLoRA) instead of alpha/r.</param>
    /// <param name="generator">a CPU generator for A's initial values, or null for torch's default one.</param>
    /// <param name="dropoutRandom">where the dropout masks come from (a training run passes the stream it reseeds per
    /// micro-batch), or null for a stream of the adapter's own (<see cref="LoraDropout"/>).</param>
    /// <param name="dropoutKernel">the fused dropout of the run's kernel selection; null = the torch-op reference.</param>
    /// <param name="gradientKernel">how a hand-written backward (<see cref="Record"/>) adds A's and B's gradients into their
    /// .grad, from the run's kernel selection (<see cref="FusedWeightGradient"/>); null = the torch-op reference.</param>
    public LoraLinear(FrozenLinear baseLayer, int r, double alpha, double dropout, bool useRsLora,
        Generator? generator = null, Models.RandomStream? dropoutRandom = null, FusedDropout? dropoutKernel = null,
        FusedWeightGradient? gradientKernel = null) : base(nameof(LoraLinear))
    {
        GradientKernel = gradientKernel;
        if (dropout < 0 || dropout >= 1)
            throw new ArgumentException($"LoRA dropout {dropout} must be in [0, 1)");
        Rank = r;
        Alpha = alpha;
        Scaling = LoraMath.Scaling(alpha, r, useRsLora);
        base_layer = baseLayer;

        // A and B are drawn on the CPU, so one seed gives the same adapter on every device, then moved next to the base.
        var device = DeviceOf(baseLayer);
        double bound = LoraMath.KaimingUniformBound(baseLayer.InFeatures);
        using (var a = torch.empty(r, baseLayer.InFeatures, ScalarType.Float32))
        using (var b = torch.zeros(baseLayer.OutFeatures, r, ScalarType.Float32))
        using (torch.no_grad())
        {
            a.uniform_(-bound, bound, generator);
            using var aOnDevice = a.to(device);
            using var bOnDevice = b.to(device);
            lora_A = new LoraFactor("lora_A", aOnDevice);  // (r, in)
            lora_B = new LoraFactor("lora_B", bOnDevice);  // (out, r)
        }
        lora_dropout = dropout > 0 ? new LoraDropout(dropout, dropoutRandom, dropoutKernel) : nn.Identity();
        (_deviceType, _deviceIndex) = LoraDevice.RecordFor(lora_A.Weight);
        RegisterComponents();
    }

    public FrozenLinear BaseLayer => base_layer;
    public int Rank { get; }
    public double Alpha { get; }
    public double Scaling { get; }
    public long InFeatures => base_layer.InFeatures;
    public ScalarType ComputeDType => base_layer.ComputeDType;
    public long OutFeatures => base_layer.OutFeatures;

    /// <summary>A [r, in], the trainable down-projection (fp32).</summary>
    public Parameter A => lora_A.Weight;

    /// <summary>B [out, r], the trainable up-projection (fp32).</summary>
    public Parameter B => lora_B.Weight;

    /// <summary>How the tapes of <see cref="Record"/> add the factors' gradients (null: the torch-op reference).</summary>
    internal FusedWeightGradient? GradientKernel { get; }

    /// <summary>When set, forward is the base layer's alone.</summary>
    public bool Disabled { get; set; }

    /// <summary>The base layer while <see cref="Disabled"/> (this module then computes it exactly), else null.</summary>
    public FrozenLinear? BareLinear => Disabled ? base_layer : null;

    /// <summary>The forward-pass counter of the model this adapter sits in, or null: then A and B are cast to the
    /// compute dtype on every call. Set alone (an adapter built outside <see cref="LoraApplier"/>), the adapter
    /// batches its own two factors per pass; <see cref="Casts"/> shares the model's batch instead.</summary>
    public ForwardPasses? Passes
    {
        get => casts?.Passes;
        init => Join(value is null ? null : new LoraFactorCasts(value));
    }

    /// <summary>The model's factors in the compute dtype, one batch per forward pass for all its adapters
    /// (<see cref="LoraApplier"/> makes one per model); this adapter joins it. Null: no pass counter, as
    /// <see cref="Passes"/> null.</summary>
    internal LoraFactorCasts? Casts
    {
        get => casts;
        init => Join(value);
    }

    LoraFactorCasts? casts;
    SharedLoraDown? shared;                                 // the adapters this one leads in sharing its input, with their cache

    void Join(LoraFactorCasts? batch)
    {
        if (casts is not null) throw new InvalidOperationException($"set {nameof(Passes)} or {nameof(Casts)}, once");
        casts = batch;
        casts?.Add(this);
    }

    public override Tensor forward(Tensor x)
    {
        if (Disabled) return base_layer.forward(x);
        if (base_layer is QuantizationAwareLinear aware) return AwareForward(aware, x);
        using var scope = NewDisposeScope();
        var result = base_layer.forward(x);                          // (..., out), base output dtype
        var dtype = base_layer.ComputeDType;
        var h = lora_dropout.forward(x).to(dtype);                   // (..., in)
        var (a, b) = Factors(dtype);
        var y = LoraPath.AddLowRank(result, h, a, b, Scaling, ownsBase: true);    // result is this call's own product
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// A and B in the compute dtype, as handles the caller's scope disposes. Where autograd needs the casts in its
    /// graph (grad mode on, factors trainable) they are made here; otherwise (the checkpointed forward, its
    /// recomputation, inference) taken from the model's batch of casts, made once per forward pass for every
    /// adapter by one cat and one cast (<see cref="Casts"/>) and reused by the pass's recomputation.
    /// </summary>
    internal (Tensor A, Tensor B) Factors(ScalarType dtype) => (Cast(isA: true, dtype), UpFactor(dtype));

    /// <summary>B alone in the compute dtype, as <see cref="Factors"/> makes it (adapters sharing their down
    /// projection use a concatenated A instead of their own, <see cref="SharedLoraDown"/>).</summary>
    internal Tensor UpFactor(ScalarType dtype) => Cast(isA: false, dtype);

    Tensor Cast(bool isA, ScalarType dtype) =>
        casts is null || KernelPath.NeedsGraph(A, B) ? (isA ? A : B).to(dtype)
        : isA ? casts.A(this, dtype) : casts.B(this, dtype);

    /// <summary>Whether the adapter's input goes through dropout now (a probability above 0, in training mode): then
    /// its down projection reads an input of its own and cannot be shared.</summary>
    internal bool DropsInput => lora_dropout is LoraDropout { training: true };

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            casts?.Remove(this);
            shared?.Dispose();
            shared = null;
        }
        base.Dispose(disposing);
    }

    /// <summary>Whether <see cref="Record"/> can stand in for autograd here: a base with a plain frozen product
    /// (not quantization-aware training's round trip, whose update lives inside the weight).</summary>
    public bool SupportsTape => base_layer.SupportsTape && base_layer is not QuantizationAwareLinear;

    /// <summary>Forward without autograd for a backward written out by hand (<see cref="LoraLinearTape"/>); the
    /// arguments are <see cref="FrozenLinear.Record"/>'s. Disabled: the base's tape alone.</summary>
    /// <param name="x">(..., in) in the compute dtype.</param>
    public LinearTape Record(Tensor x, bool keepWeight, bool product = true)
    {
        var baseTape = base_layer.Record(x, keepWeight, product);
        if (Disabled) return baseTape;
        var (a, b) = Factors(base_layer.ComputeDType);
        return new LoraLinearTape(baseTape, x, lora_dropout as LoraDropout, A, B, a, b, Scaling, product, gradients: GradientKernel);
    }

    /// <summary>With every member a <see cref="LoraLinear"/> that can share its down projection
    /// (<see cref="SharedLoraDown.CanShare"/>), their forward with one down GEMM, when no graph is needed.</summary>
    public Tensor[]? ForwardShared(IReadOnlyList<ISharedInputLinear> members, Tensor x) => SharedWith(members)?.Forward(x);

    /// <summary>With every member a <see cref="LoraLinear"/> that can share its down projection, their tapes with one
    /// down GEMM and a backward that shares A's side (<see cref="SharedLoraDownTape"/>).</summary>
    public LinearTapeGroup? RecordShared(IReadOnlyList<ISharedInputLinear> members, Tensor x, bool keepWeight) =>
        SharedWith(members)?.Record(x, keepWeight);

    /// <summary>The group of <paramref name="members"/>, led (and its concatenated A kept) by this adapter, the first
    /// member; made again when the members change (a slot replaced). Null when they cannot share now.</summary>
    SharedLoraDown? SharedWith(IReadOnlyList<ISharedInputLinear> members)
    {
        if (members.Count == 0 || !ReferenceEquals(members[0], this))
            throw new ArgumentException("the group is asked of its first member", nameof(members));
        if (shared is null || !shared.Is(members))
        {
            if (members.Any(m => m is not LoraLinear)) return null;
            shared?.Dispose();
            shared = new SharedLoraDown([.. members.Cast<LoraLinear>()]);
        }
        return shared.CanShare ? shared : null;
    }

    /// <summary>
    /// Quantization-aware training (QAT-LoRA): the adapter is part of the weight the target format rounds,
    /// y = fake(W + scaling · B @ A)(x), so the gradient reaches A and B through the rounding (straight through) and a
    /// merge into that format keeps what was learned (<see cref="QuantizationAwareLoraMatMul"/>, which keeps no
    /// (out, in) tensor for backward). Dropout has no separate input here and is refused by the config.
    /// </summary>
    Tensor AwareForward(QuantizationAwareLinear aware, Tensor x)
    {
        if (lora_dropout is LoraDropout)
            throw new InvalidOperationException("LoRA dropout does not apply to quantization-aware training of the merged weight; set lora.dropout to 0");
        return QuantizationAwareLoraMatMul.Call(x, aware, A, B, Scaling);
    }

    /// <summary>The device of the base's stored weight (a parameter or, for packed formats, a buffer).</summary>
    private static Device DeviceOf(FrozenLinear baseLayer)
    {
        var t = baseLayer.parameters().Cast<Tensor>().Concat(baseLayer.buffers()).FirstOrDefault();
        return t?.device ?? torch.CPU;
    }
}
