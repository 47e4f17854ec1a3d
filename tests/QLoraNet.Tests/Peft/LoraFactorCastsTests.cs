using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Tests.Models.Families;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>
/// The model's LoRA factors in the compute dtype, made by one batched cat and cast per forward pass
/// (LoraFactorCasts): each factor handed out must be bit for bit its own cast, a group's concatenated A the cat of
/// its adapters' casts (and a view of the batch, not a copy), a change to the parameters between passes must show in
/// the next pass, and a pass must make one batch, however many adapters ask.
/// </summary>
[Trait("tier", "unit")]
public class LoraFactorCastsTests
{
    const long In = 24;
    static readonly long[] Outs = [24, 8, 8, 24];   // q, k, v, o: q/k/v read one input, o its own
    static readonly int[] Ranks = [4, 2, 3, 5];

    /// <summary>Four adapters over bf16-computing dense bases, joined to one batch in order, B random (not zero).</summary>
    sealed class Adapters : IDisposable
    {
        public readonly ForwardPasses Passes = new();
        public readonly LoraFactorCasts Casts;
        public readonly LoraLinear[] All;

        public Adapters(ScalarType computeDType = ScalarType.BFloat16)
        {
            Casts = new LoraFactorCasts(Passes);
            using var generator = new Generator(7);
            All = new LoraLinear[Outs.Length];
            for (int i = 0; i < Outs.Length; i++)
            {
                using var w = randn([Outs[i], In], generator: generator);
                All[i] = new LoraLinear(new DenseTestLinear(w, computeDType), Ranks[i], 8, 0, false, generator) { Casts = Casts };
                using (no_grad())
                using (var b = randn(All[i].B.shape, generator: generator))
                    All[i].B.copy_(b);
            }
        }

        public LoraLinear[] Qkv => All[..3];

        public void Dispose()
        {
            foreach (var a in All) a.Dispose();
        }
    }

    [Fact]
    public void Every_factor_is_bit_for_bit_its_own_cast()
    {
        using var adapters = new Adapters();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var lora in adapters.All)
        {
            var (a, b) = lora.Factors(ScalarType.BFloat16);
            Assert.True(Bits.Same(lora.A.to(ScalarType.BFloat16), a), "A differs from its own cast");
            Assert.True(Bits.Same(lora.B.to(ScalarType.BFloat16), b), "B differs from its own cast");
            Assert.False(a.requires_grad);
        }
        Assert.Equal(1, adapters.Casts.BatchesMade);
    }

    [Fact]
    public void A_groups_concatenated_A_is_the_cat_of_its_casts_and_a_view_of_the_batch()
    {
        using var adapters = new Adapters();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var rows = adapters.Casts.ConcatenatedA(adapters.Qkv, ScalarType.BFloat16);
        var expected = cat([.. adapters.Qkv.Select(a => a.A.to(ScalarType.BFloat16))]);
        Assert.True(Bits.Same(expected, rows), "the concatenated A differs from the cat of the casts");

        // Not adjacent in the batch (q, v): still the cat, made apart.
        LoraLinear[] apart = [adapters.All[0], adapters.All[2]];
        var qv = adapters.Casts.ConcatenatedA(apart, ScalarType.BFloat16);
        Assert.True(Bits.Same(cat([.. apart.Select(a => a.A.to(ScalarType.BFloat16))]), qv));
        Assert.Equal(1, adapters.Casts.BatchesMade);

        var firstA = adapters.Qkv[0].Factors(ScalarType.BFloat16).A;
        firstA.fill_(3);                                                          // rows of the batch, no cat of their own:
        Assert.Equal(3f, rows[0, 0].to(ScalarType.Float32).item<float>());    // one storage
    }

    [Fact]
    public void A_parameter_changed_in_place_between_passes_is_seen_by_the_next_pass()
    {
        using var adapters = new Adapters();
        var lora = adapters.All[1];
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var before = lora.Factors(ScalarType.BFloat16).A.clone();
        var rowsBefore = adapters.Casts.ConcatenatedA(adapters.Qkv, ScalarType.BFloat16).clone();

        lora.A.add_(0.5);                                                         // an optimizer step, in place
        lora.B.mul_(-2);
        adapters.Passes.Next();

        var (a, b) = lora.Factors(ScalarType.BFloat16);
        Assert.False(Bits.Same(before, a), "the pass kept the previous pass's A");
        Assert.True(Bits.Same(lora.A.to(ScalarType.BFloat16), a));
        Assert.True(Bits.Same(lora.B.to(ScalarType.BFloat16), b));
        var rows = adapters.Casts.ConcatenatedA(adapters.Qkv, ScalarType.BFloat16);
        Assert.False(Bits.Same(rowsBefore, rows), "the concatenated A is the previous pass's");
        Assert.True(Bits.Same(cat([.. adapters.Qkv.Select(x => x.A.to(ScalarType.BFloat16))]), rows));
        Assert.Equal(2, adapters.Casts.BatchesMade);
    }

    [Fact]
    public void Within_a_pass_the_batch_is_made_once_and_kept()
    {
        using var adapters = new Adapters();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        for (int round = 0; round < 3; round++)                                   // forward, recomputation, ...
        {
            foreach (var lora in adapters.All) lora.Factors(ScalarType.BFloat16);
            adapters.Casts.ConcatenatedA(adapters.Qkv, ScalarType.BFloat16);
        }
        Assert.Equal(1, adapters.Casts.BatchesMade);
        adapters.Passes.Next();
        adapters.All[3].Factors(ScalarType.BFloat16);
        Assert.Equal(2, adapters.Casts.BatchesMade);
    }

    [Fact]
    public void Where_autograd_needs_the_casts_they_are_made_in_its_graph_not_taken_from_the_batch()
    {
        using var adapters = new Adapters();
        using var scope = NewDisposeScope();
        using var grad = enable_grad();
        var (a, b) = adapters.All[0].Factors(ScalarType.BFloat16);
        Assert.True(a.requires_grad && b.requires_grad);
        Assert.Equal(0, adapters.Casts.BatchesMade);
    }

    [Fact]
    public void In_the_factors_own_dtype_nothing_is_copied()
    {
        using var adapters = new Adapters(ScalarType.Float32);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var lora = adapters.All[0];
        var (a, b) = lora.Factors(ScalarType.Float32);
        Assert.True(Bits.Same(lora.A, a) && Bits.Same(lora.B, b));
        a.fill_(3);                                                               // the parameters themselves
        b.fill_(4);
        Assert.Equal(3f, lora.A[0, 0].item<float>());
        Assert.Equal(4f, lora.B[0, 0].item<float>());
        Assert.Equal(0, adapters.Casts.BatchesMade);
        var rows = adapters.Casts.ConcatenatedA(adapters.Qkv, ScalarType.Float32);   // a cat is a copy: one per pass, for all A's
        Assert.True(Bits.Same(cat([.. adapters.Qkv.Select(x => (Tensor)x.A)]), rows));
        Assert.Equal(1, adapters.Casts.BatchesMade);
    }

    [Fact]
    public void An_adapter_that_joins_or_leaves_makes_the_batch_again()
    {
        using var adapters = new Adapters();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        adapters.All[0].Factors(ScalarType.BFloat16);
        using (var g = new Generator(3))
        using (var w = randn([16, In], generator: g))
        {
            var extra = new LoraLinear(new DenseTestLinear(w, ScalarType.BFloat16), 2, 4, 0, false, g) { Casts = adapters.Casts };
            var (a, _) = extra.Factors(ScalarType.BFloat16);                     // joined after the batch was made
            Assert.True(Bits.Same(extra.A.to(ScalarType.BFloat16), a));
            Assert.Equal(2, adapters.Casts.BatchesMade);
            extra.Dispose();                                                     // leaves
        }
        var rows = adapters.Casts.ConcatenatedA(adapters.Qkv, ScalarType.BFloat16);
        Assert.True(Bits.Same(cat([.. adapters.Qkv.Select(x => x.A.to(ScalarType.BFloat16))]), rows));
        Assert.Equal(3, adapters.Casts.BatchesMade);
    }

    [Fact]
    public void A_models_adapters_share_one_batch_made_once_per_forward_pass()
    {
        using var built = ModelBuilder.Build(FamilyReference.DirOf("llama3"), new ModelBuildOptions(CPU, ScalarType.BFloat16, FamilyLora.Dense,
            NewAdapter: FamilyLora.AllLinear, AdapterSeed: 5, GradientCheckpointing: true));
        var model = built.Model;
        var loras = model.modules().OfType<LoraLinear>().ToList();
        var casts = loras[0].Casts;
        Assert.NotNull(casts);
        Assert.All(loras, l => Assert.Same(casts, l.Casts));
        var ids = FamilyReference.Of("llama3").HeldoutIds.Take(8).ToArray();
        using var input = tensor(ids, [1, ids.Length]);
        using (no_grad())
        {
            using var first = model.forward(input);
            Assert.Equal(1, casts!.BatchesMade);
            using var second = model.forward(input);
            Assert.Equal(2, casts.BatchesMade);
        }
        // A checkpointed training step: the forward and the recomputation in backward share the pass's batch.
        model.train();
        using (var logits = model.forward(input))
        using (var loss = logits.to(ScalarType.Float32).sum())
            loss.backward();
        Assert.Equal(3, casts.BatchesMade);
        Assert.All(loras, l => Assert.NotNull(l.A.grad));
    }
}
