using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>
/// LoRA adapters on q/k/v sharing their down projection (SharedLoraDown, SharedLoraDownTape) against each adapter on
/// its own (LoraLinearTape, LoraLinear.forward), the reference: the same outputs and the same gradients of every A, B
/// and of the input, in fp32. Tolerance: each entry on either path is a chain of fp32 sums and products (the down GEMM
/// over in, the up GEMM over r, dA over the tokens, dx over out and Σr, a few adds and scalings) of at most
/// K = in + max(out) + Σr + N + 8 roundings, so it is within γ_K·M of the exact value, γ_K = K·u/(1 − K·u), u = 2⁻²⁴,
/// where M is the same expression with every operand replaced by its absolute value (Higham, "Accuracy and Stability
/// of Numerical Algorithms", §3.1 and §3.5); the two paths are then within 2γ_K·M of each other, entry by entry
/// (here about 3e-5·M, where a missing or doubled term would be of the order of M itself).
/// </summary>
[Trait("tier", "unit")]
public class SharedLoraDownTests
{
    static readonly LinearRole[] Qkv = [LinearRole.Query, LinearRole.Key, LinearRole.Value];
    const long In = 48;
    static readonly long[] Outs = [48, 16, 16];      // q, k, v: grouped-query shapes, fewer kv features
    static readonly long[] InputShape = [2, 9, In];  // (B, T, in), N = 18 tokens

    sealed class Owner() : nn.Module("self_attn");

    /// <summary>q/k/v slots of a module, each a LoRA adapter over a dense fp32 base with a bias, B random (so A gets a
    /// gradient), all counting one model's forward passes.</summary>
    sealed class Slots : IDisposable
    {
        public readonly Owner Module = new();
        public readonly LinearSlots Linears;
        public readonly LoraLinear[] Adapters;
        public readonly Tensor[] Weights, Biases;
        public readonly ForwardPasses Passes = new();

        public Slots(int[] ranks, double[] alphas, bool rsLora = false, double dropout = 0)
        {
            Linears = new LinearSlots(Module);
            using var generator = new Generator(11);
            Weights = [.. Outs.Select(o => randn([o, In], generator: generator).mul_(0.2).DetachFromDisposeScope())];
            Biases = [.. Outs.Select(o => randn([o], generator: generator).DetachFromDisposeScope())];
            Adapters = new LoraLinear[3];
            for (int i = 0; i < 3; i++)
            {
                var baseLayer = new DenseFrozenLinear(Weights[i], ScalarType.Float32);
                Adapters[i] = new LoraLinear(baseLayer, ranks[i], alphas[i], dropout, rsLora, generator) { Passes = Passes };
                using (no_grad())
                using (var b = randn(Adapters[i].B.shape, generator: generator).mul_(0.1))
                    Adapters[i].B.copy_(b);
                Linears.Add(Qkv[i].ToString(), Qkv[i], Adapters[i], Biases[i].clone());
            }
        }

        public void Dispose()
        {
            Module.Dispose();
            foreach (var t in Weights.Concat(Biases)) t.Dispose();
        }
    }

    /// <summary>The three outputs, the input gradient and (A, B) gradients per adapter.</summary>
    sealed record Result(Tensor[] Outputs, Tensor InputGrad, Tensor[] Grads);

    static Result Run(Slots s, Tensor x, Tensor[] dys, bool shared)
    {
        foreach (var a in s.Adapters) a.A.grad = a.B.grad = null;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();                     // as the explicit layer backward records and runs tapes
        using var group = shared
            ? s.Linears.RecordShared(Qkv, x, keepWeight: true)
            : new LinearTapeGroup([.. Qkv.Select(r => s.Linears.Record(r, x, keepWeight: true))]);   // q, k, v on their own, in turn
        Assert.IsType(shared ? typeof(SharedLoraDownTape) : typeof(LinearTapeGroup), group);   // exactly the type: the base class is the unshared path
        var outputs = group.Members.Select(t => t.Output!.clone()).ToArray();
        var dx = group.Backward(dys, null);
        var grads = s.Adapters.SelectMany(a => new[] { a.A.grad!.clone(), a.B.grad!.clone() }).ToArray();
        return new Result([.. outputs.Select(o => o.MoveToOuterDisposeScope())], dx.clone().MoveToOuterDisposeScope(),
            [.. grads.Select(g => g.MoveToOuterDisposeScope())]);
    }

    /// <summary><see cref="Result"/> with every operand replaced by its absolute value, in fp64: M of the tolerance.</summary>
    static Result Magnitudes(Slots s, Tensor x, Tensor[] dys)
    {
        using var scope = NewDisposeScope();
        var ax = x.abs().reshape(-1, In).to(ScalarType.Float64);                        // (N, in)
        var outputs = new Tensor[3];
        var grads = new Tensor[6];
        var dx = zeros_like(ax);                                                        // (N, in)
        for (int i = 0; i < 3; i++)
        {
            var lora = s.Adapters[i];
            var (aA, aB, aW) = (Abs64(lora.A), Abs64(lora.B), Abs64(s.Weights[i]));
            var aDy = Abs64(dys[i]).reshape(-1, Outs[i]);                               // (N, out)
            var aDown = ax.mm(aA.t());                                                  // (N, r)
            var aDyB = aDy.mm(aB);                                                      // (N, r)
            outputs[i] = (ax.mm(aW.t()) + Abs64(s.Biases[i]) + aDown.mm(aB.t()) * lora.Scaling).reshape(InputShape[0], InputShape[1], Outs[i]);
            grads[2 * i] = aDyB.t().mm(ax) * lora.Scaling;                              // A (r, in)
            grads[2 * i + 1] = aDy.t().mm(aDown) * lora.Scaling;                        // B (out, r)
            dx += aDy.mm(aW) + aDyB.mm(aA) * lora.Scaling;
        }
        return new Result([.. outputs.Select(o => o.MoveToOuterDisposeScope())], dx.reshape(InputShape).MoveToOuterDisposeScope(),
            [.. grads.Select(g => g.MoveToOuterDisposeScope())]);

        static Tensor Abs64(Tensor t) => t.detach().abs().to(ScalarType.Float64);
    }

    /// <summary>|expected − actual| ≤ 2γ_K·M entry by entry (the type's summary says why).</summary>
    static void AssertWithinRounding(string what, Tensor expected, Tensor actual, Tensor magnitude, long sumOfRanks)
    {
        long k = In + Outs.Max() + sumOfRanks + InputShape[0] * InputShape[1] + 8;
        double u = Math.Pow(2, -24), gamma = k * u / (1 - k * u);
        using var scope = NewDisposeScope();
        Assert.Equal(expected.shape, actual.shape);
        Assert.True(expected.abs().sum().item<float>() > 0, $"{what} is zero: the comparison would show nothing");
        var diff = (expected.to(ScalarType.Float64) - actual.to(ScalarType.Float64)).abs();
        var excess = (diff - magnitude * (2 * gamma)).max().item<double>();
        Assert.True(excess <= 0, $"{what}: differs by {diff.max().item<double>():E2}, over 2γ_K·M by {excess:E2}");
    }

    static (Tensor X, Tensor[] Dys) Inputs()
    {
        using var generator = new Generator(23);
        var x = randn(InputShape, generator: generator);
        var dys = Outs.Select(o => randn([InputShape[0], InputShape[1], o], generator: generator)).ToArray();
        return (x, dys);
    }

    public static TheoryData<int[], double[], bool> Configurations => new()
    {
        { [4, 4, 4], [8, 8, 8], false },        // one rank and alpha for all, as a config's lora section gives them
        { [4, 8, 2], [8, 4, 16], false },       // per-projection ranks and scalings (peft's rank_pattern/alpha_pattern)
        { [3, 5, 16], [6, 6, 6], true },        // rsLoRA scalings, ranks not multiples of anything
    };

    [Theory]
    [MemberData(nameof(Configurations))]
    public void Shared_tapes_give_each_adapters_outputs_and_gradients(int[] ranks, double[] alphas, bool rsLora)
    {
        using var slots = new Slots(ranks, alphas, rsLora);
        var (x, dys) = Inputs();
        var separate = Run(slots, x, dys, shared: false);
        var shared = Run(slots, x, dys, shared: true);
        var m = Magnitudes(slots, x, dys);
        long sumOfRanks = ranks.Sum();
        for (int i = 0; i < 3; i++)
        {
            AssertWithinRounding($"{Qkv[i]} output", separate.Outputs[i], shared.Outputs[i], m.Outputs[i], sumOfRanks);
            AssertWithinRounding($"{Qkv[i]} dA", separate.Grads[2 * i], shared.Grads[2 * i], m.Grads[2 * i], sumOfRanks);
            AssertWithinRounding($"{Qkv[i]} dB", separate.Grads[2 * i + 1], shared.Grads[2 * i + 1], m.Grads[2 * i + 1], sumOfRanks);
        }
        AssertWithinRounding("dx", separate.InputGrad, shared.InputGrad, m.InputGrad, sumOfRanks);
    }

    [Fact]
    public void A_grad_already_there_is_added_to_as_autograd_accumulates()
    {
        using var slots = new Slots([4, 8, 2], [8, 4, 16]);
        var (x, dys) = Inputs();
        var once = Run(slots, x, dys, shared: true);
        using (no_grad())
        using (var group = slots.Linears.RecordShared(Qkv, x, keepWeight: false))
        {
            using var dx = group.Backward(dys, null);                                   // a second micro-batch, same data
        }
        var m = Magnitudes(slots, x, dys);
        for (int i = 0; i < 3; i++)
        {
            using var twiceA = once.Grads[2 * i] * 2;
            AssertWithinRounding($"{Qkv[i]} dA accumulated", twiceA, slots.Adapters[i].A.grad!, m.Grads[2 * i] * 2, 14);
        }
    }

    [Fact]
    public void A_changed_between_passes_reaches_the_shared_down_projection()
    {
        using var slots = new Slots([4, 8, 2], [8, 4, 16]);
        var (x, dys) = Inputs();
        Run(slots, x, dys, shared: true);                                               // pass 0 keeps its concatenated A
        using (no_grad()) slots.Adapters[1].A.add_(0.25);                                // an optimizer step, in place
        slots.Passes.Next();
        var separate = Run(slots, x, dys, shared: false);
        var shared = Run(slots, x, dys, shared: true);
        var m = Magnitudes(slots, x, dys);
        for (int i = 0; i < 3; i++)
            AssertWithinRounding($"{Qkv[i]} output", separate.Outputs[i], shared.Outputs[i], m.Outputs[i], 14);
        AssertWithinRounding("dx", separate.InputGrad, shared.InputGrad, m.InputGrad, 14);
    }

    [Fact]
    public void Forward_without_a_graph_shares_the_down_projection_and_with_one_does_not()
    {
        using var slots = new Slots([4, 8, 2], [8, 4, 16]);
        var (x, dys) = Inputs();
        var members = slots.Adapters.Cast<ISharedInputLinear>().ToArray();
        var m = Magnitudes(slots, x, dys);
        using (no_grad())
        {
            Assert.NotNull(slots.Adapters[0].ForwardShared(members, x));
            var shared = slots.Linears.CallShared(Qkv, x);
            for (int i = 0; i < 3; i++)
            {
                using var own = slots.Linears.Call(Qkv[i], x);
                AssertWithinRounding($"{Qkv[i]} output", own, shared[i], m.Outputs[i], 14);
            }
        }
        // Training without checkpointing: A and B need the graph, so each adapter runs its own forward.
        Assert.Null(slots.Adapters[0].ForwardShared(members, x));
        var outputs = slots.Linears.CallShared(Qkv, x);
        for (int i = 0; i < 3; i++)
        {
            Assert.True(outputs[i].requires_grad);
            using var own = slots.Linears.Call(Qkv[i], x);
            Assert.True(Bits.Same(own, outputs[i]));
        }
    }

    [Fact]
    public void Dropout_a_disabled_adapter_or_a_linear_without_one_keeps_each_on_its_own_path()
    {
        var (x, _) = Inputs();
        using (var slots = new Slots([4, 4, 4], [8, 8, 8], dropout: 0.25))
        {
            slots.Module.train();
            AssertShared(slots.Linears, x, false);                                      // a mask per adapter: inputs differ
            slots.Module.eval();
            AssertShared(slots.Linears, x, true);                                       // dropout is the identity in eval
        }
        using (var slots = new Slots([4, 4, 4], [8, 8, 8]))
        {
            AssertShared(slots.Linears, x, true);
            slots.Adapters[2].Disabled = true;
            AssertShared(slots.Linears, x, false);
            slots.Adapters[2].Disabled = false;
            slots.Linears.Replace(LinearRole.Key.ToString(), new DenseFrozenLinear(slots.Weights[1], ScalarType.Float32));   // k without an adapter
            AssertShared(slots.Linears, x, false);
        }
    }

    [Fact]
    public void The_explicit_layer_backward_shares_the_down_projection_of_a_models_qkv_only_without_dropout()
    {
        foreach (double dropout in new[] { 0.0, 0.25 })
        {
            using var built = FamilyLora.Build("llama3", FamilyLora.Dense, FamilyLora.AllLinear with { Dropout = dropout }, checkpointing: true);
            built.Model.train();
            var layer = built.Model.modules().OfType<LlamaDecoderLayer>().First();
            var q = (LoraLinear)layer.SelfAttn.Projections[layer.SelfAttn.Projections.Names.First()];
            using var x = randn(1, 5, q.InFeatures);
            AssertShared(layer.SelfAttn.Projections, x, shared: dropout == 0);
        }
    }

    static void AssertShared(LinearSlots slots, Tensor x, bool shared)
    {
        using var noGrad = no_grad();
        using var group = slots.RecordShared(Qkv, x, keepWeight: false);
        Assert.IsType(shared ? typeof(SharedLoraDownTape) : typeof(LinearTapeGroup), group);   // exactly the type: the base class is the unshared path
        Assert.Equal(3, group.Members.Count);
    }
}
