using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Tests.Models.Families;
using QLoraNet.Tests.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models;

/// <summary>
/// The last decoder layers' forwards keep their records (<see cref="ExplicitLayerTape"/>) for their backwards instead
/// of being recomputed (<see cref="LayerCheckpoint"/>, <see cref="LlamaModel.UncheckpointedLayers"/>). The record
/// runs the recomputation's ops on the forward's values and the backward reads them as it would have read the
/// recomputation's, so on the CPU in fp32 the loss and every adapter gradient equal those of the path that recomputes
/// every layer bit for bit (not merely to rounding), with and without dropout, and so do the next step's (the
/// streams stand where they stood), whether one layer keeps its record (the default) or every layer does.
/// </summary>
[Trait("tier", "unit")]
public class LayerRecordTests
{
    /// <summary>Families whose layers the explicit backward takes.</summary>
    public static TheoryData<string> Explicit => new(["llama3", "mistral", "qwen2", "gemma"]);

    sealed record Outcome(float[] Losses, Tensor[] Grads, long[] Recorded, long Explicit, long Autograd);

    /// <summary>Two forward/backward passes (the gradients accumulate; the second draws its masks after the first's).</summary>
    static Outcome Run(string family, BaseFormat format, double dropout, int recorded, bool keepWeights = true)
    {
        using var built = FamilyLora.Build(family, format, FamilyLora.AllLinear with { Dropout = dropout }, checkpointing: true);
        var decoder = built.Model.modules().OfType<LlamaModel>().Single();
        decoder.UncheckpointedLayers = recorded;
        var layers = decoder.Layers.ToList();
        foreach (var layer in layers) layer.KeepWeightsForBackward = keepWeights;
        built.Model.train();
        var ids = FamilyReference.Of(family).HeldoutIds.Take(40).ToArray();
        var (first, _) = FamilyLora.LossAndAdapterGradients(built.Model, ids);
        var (second, grads) = FamilyLora.LossAndAdapterGradients(built.Model, ids);
        return new Outcome([first, second], grads, [.. layers.Select(l => l.RecordedBackwards)],
            layers.Sum(l => l.BackwardCounts.Explicit), layers.Sum(l => l.BackwardCounts.Autograd));
    }

    static void AssertIdentical(Outcome expected, Outcome actual)
    {
        Assert.Equal(expected.Losses, actual.Losses);
        Assert.Equal(expected.Grads.Length, actual.Grads.Length);
        for (int i = 0; i < expected.Grads.Length; i++)
        {
            Assert.True(expected.Grads[i].abs().sum().item<float>() > 0, $"gradient {i} is zero");
            Assert.True(expected.Grads[i].equal(actual.Grads[i]).all().item<bool>(), $"gradient {i} differs by {(expected.Grads[i] - actual.Grads[i]).abs().max().item<float>():E2}");
        }
    }

    [Theory]
    [MemberData(nameof(Explicit))]
    public void Recording_the_last_layer_changes_no_bit_of_the_loss_or_the_gradients(string family)
    {
        var recomputed = Run(family, FamilyLora.Dense, 0, recorded: 0);
        var recorded = Run(family, FamilyLora.Dense, 0, recorded: 1);
        AssertIdentical(recomputed, recorded);
        // Every backward is explicit either way; only the last layer's read its record (once per pass), none recomputed it.
        Assert.Equal((recomputed.Explicit, 0L), (recorded.Explicit, recorded.Autograd));
        Assert.All(recomputed.Recorded, n => Assert.Equal(0, n));
        Assert.Equal([.. Enumerable.Repeat(0L, recorded.Recorded.Length - 1), 2L], recorded.Recorded);
    }

    /// <summary>More layers than the model has: every layer keeps its record, the last with its dense weights and the
    /// others without (their backward dequantizes again), and still no bit moves.</summary>
    [Theory]
    [InlineData("llama3", 0.0)]
    [InlineData("gemma", 0.0)]
    [InlineData("llama3", 0.25)]
    public void Recording_every_layer_changes_no_bit_of_the_loss_or_the_gradients(string family, double dropout)
    {
        var format = BaseFormat.Parse("nf4-dq");
        var recomputed = Run(family, format, dropout, recorded: 0);
        var recorded = Run(family, format, dropout, recorded: 1000);
        AssertIdentical(recomputed, recorded);
        Assert.True(recorded.Recorded.Length >= 2, "the fixture needs two layers or more");
        Assert.All(recorded.Recorded, n => Assert.Equal(2L, n));
        Assert.Equal((recomputed.Explicit, 0L), (recorded.Explicit, recorded.Autograd));
    }

    [Fact]
    public void A_negative_count_is_refused()
    {
        using var built = FamilyLora.Build("llama3", FamilyLora.Dense, FamilyLora.AllLinear, checkpointing: true);
        var decoder = built.Model.modules().OfType<LlamaModel>().Single();
        Assert.Throws<ArgumentOutOfRangeException>(() => decoder.UncheckpointedLayers = -1);
        Assert.Equal(1, decoder.UncheckpointedLayers);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void With_dropout_and_an_nf4_base_the_masks_and_the_next_steps_draws_are_unchanged(bool keepWeights)
    {
        var format = BaseFormat.Parse("nf4-dq");
        var recomputed = Run("llama3", format, 0.25, recorded: 0, keepWeights);
        var recorded = Run("llama3", format, 0.25, recorded: 1, keepWeights);
        AssertIdentical(recomputed, recorded);
        Assert.Equal(2L, recorded.Recorded[^1]);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.25)]
    public void The_recorded_output_is_the_layers_forward_and_draws_what_it_draws(double dropout)
    {
        using var built = FamilyLora.Build("llama3", FamilyLora.Dense, FamilyLora.AllLinear with { Dropout = dropout }, checkpointing: true);
        built.Model.train();
        var decoder = built.Model.modules().OfType<LlamaModel>().Single();
        var layer = decoder.Layers.Last();
        var streams = layer.modules().OfType<IStochasticModule>().Select(m => m.Random).Distinct().ToList();
        Assert.Equal(dropout > 0, streams.Count > 0);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        long t = 12, hidden = decoder.EmbedTokens.Weight.shape[1];
        var x = randn([1, t, hidden], generator: new Generator(7));                           // (1, T, hidden)
        var (cos, sin) = decoder.Rotary.call(arange(t).unsqueeze(0));                          // (1, T, headDim)
        var before = streams.Select(s => s.State).ToList();

        var expected = layer.forward(x, cos, sin, null);
        var afterForward = streams.Select(s => s.State).ToList();
        for (int i = 0; i < streams.Count; i++) streams[i].Restore(before[i]);
        var (tape, output) = ExplicitLayerBackward.Record(layer, x, cos, sin, null, keepWeights: true, output: true);
        using (tape)
        {
            Assert.True(expected.equal(output!).all().item<bool>(), $"differs by {(expected - output!).abs().max().item<float>():E2}");
            Assert.Equal(afterForward, streams.Select(s => s.State).ToList());
            if (dropout > 0) Assert.NotEqual(before, afterForward);
        }
        Assert.True(tape.IsDisposed);
    }

    /// <summary>Two forwards of one model under grad before any backward: the second releases the first's record
    /// (at most one is held per layer, so a dropped forward cannot hold its record for good); the first's backward
    /// then recomputes its layer, with the masks its forward drew, and the gradients are still those of the path
    /// that recomputes every layer.</summary>
    [Fact]
    public void A_record_released_before_its_backward_falls_back_to_the_recomputation()
    {
        (float[] Losses, Tensor[] Grads, long Recorded) Twice(int recorded)
        {
            using var built = FamilyLora.Build("llama3", FamilyLora.Dense, FamilyLora.AllLinear with { Dropout = 0.25 }, checkpointing: true);
            var decoder = built.Model.modules().OfType<LlamaModel>().Single();
            decoder.UncheckpointedLayers = recorded;
            built.Model.train();
            var adapters = AdapterFiles.LoraModules(built.Model).ToList();
            using (no_grad())
                foreach (var (_, lora) in adapters) lora.B.fill_(0.01);
            using var input = tensor(FamilyReference.Of("llama3").HeldoutIds.Take(40).ToArray(), [1, 40]);
            using var scope = NewDisposeScope();
            var first = CausalLmLoss.Compute(built.Model.forward(input), input);
            var second = CausalLmLoss.Compute(built.Model.forward(input), input);
            (first + second).backward();
            return ([first.item<float>(), second.item<float>()],
                [.. adapters.SelectMany(l => new[] { l.lora.A.grad!.clone().DetachFromDisposeScope(), l.lora.B.grad!.clone().DetachFromDisposeScope() })],
                decoder.Layers.Last().RecordedBackwards);
        }
        var recomputed = Twice(0);
        var recorded = Twice(1);
        Assert.Equal(recomputed.Losses, recorded.Losses);
        Assert.Equal(1L, recorded.Recorded);      // the second forward's record; the first's was released and recomputed
        for (int i = 0; i < recomputed.Grads.Length; i++)
            Assert.True(recomputed.Grads[i].equal(recorded.Grads[i]).all().item<bool>(), $"gradient {i} differs");
    }
}
