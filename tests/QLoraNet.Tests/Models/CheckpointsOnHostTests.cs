using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Tests.Models.Families;
using QLoraNet.Tests.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models;

/// <summary>
/// training.checkpoints_on_host (<see cref="LlamaModel.CheckpointsOnHost"/>): each recomputed layer keeps a host copy
/// of its input instead of the input itself and brings it back for its backward. On the CPU the copy is a plain one
/// (the host is the device), so the path runs and these tests hold it to the same losses and adapter gradients, bit
/// for bit, as the checkpoints kept in place, through the explicit backward and through autograd's recomputation,
/// with dropout (the streams are restored from the forward's positions either way), and to the order in which
/// backward brings the stashes back (each one ahead of its layer's backward but the first). The device run (pinned
/// copies on a stream of their own) is `bench train --checkpoints-on-host` on the GPU machine.
/// </summary>
[Trait("tier", "unit")]
public class CheckpointsOnHostTests
{
    static (float[] Losses, Tensor[] Grads, long HostCheckpoints, long Ahead, long OnDemand, int Layers) Run(string family, double dropout, bool onHost, bool explicitBackward)
    {
        using var built = FamilyLora.Build(family, BaseFormat.Parse("nf4-dq"), FamilyLora.AllLinear with { Dropout = dropout }, checkpointing: true);
        var decoder = built.Model.modules().OfType<LlamaModel>().Single();
        decoder.CheckpointsOnHost = onHost;
        decoder.UncheckpointedLayers = 0;    // every layer recomputed: every checkpoint goes to the host
        foreach (var layer in decoder.Layers) layer.ExplicitBackward = explicitBackward;
        built.Model.train();
        var ids = FamilyReference.Of(family).HeldoutIds.Take(40).ToArray();
        var (first, _) = FamilyLora.LossAndAdapterGradients(built.Model, ids);
        var (second, grads) = FamilyLora.LossAndAdapterGradients(built.Model, ids);
        Assert.Equal(0, decoder.HostCheckpointCopies?.PinnedBytes ?? 0);   // the CPU path clones; nothing is pinned
        var done = decoder.HostCheckpointCopies?.Done ?? default;
        return ([first, second], grads, done.Stashed, done.Ahead, done.OnDemand, decoder.Layers.Count);
    }

    [Theory]
    [InlineData("llama3", 0.0, true)]
    [InlineData("llama3", 0.25, true)]
    [InlineData("llama3", 0.25, false)]
    [InlineData("gemma", 0.0, true)]
    public void Checkpoints_kept_on_the_host_give_the_same_losses_and_gradients_bit_for_bit(string family, double dropout, bool explicitBackward)
    {
        var inPlace = Run(family, dropout, onHost: false, explicitBackward);
        var onHost = Run(family, dropout, onHost: true, explicitBackward);
        // Two passes; every layer but the first (its input is the embedding's output, which the caller holds anyway).
        Assert.Equal(0, inPlace.HostCheckpoints);
        Assert.Equal(2 * (onHost.Layers - 1), onHost.HostCheckpoints);
        Assert.True(onHost.HostCheckpoints >= 2, $"{onHost.HostCheckpoints} checkpoints went to the host");
        // Each pass's backward takes its first stash (the last layer's) on demand and brings every other one back
        // while the layer after it runs its backward.
        Assert.Equal(2, onHost.OnDemand);
        Assert.Equal(onHost.HostCheckpoints - 2, onHost.Ahead);
        Assert.Equal(inPlace.Losses, onHost.Losses);
        Assert.Equal(inPlace.Grads.Length, onHost.Grads.Length);
        for (int i = 0; i < inPlace.Grads.Length; i++)
        {
            Assert.True(inPlace.Grads[i].abs().sum().item<float>() > 0, $"gradient {i} is zero");
            Assert.True(inPlace.Grads[i].equal(onHost.Grads[i]).all().item<bool>(), $"gradient {i} differs");
        }
    }

    [Fact]
    public void The_builder_passes_the_setting_to_the_model()
    {
        using var built = ModelBuilder.Build(Paths.TinyModel, new ModelBuildOptions(CPU, ScalarType.Float32, BaseFormat.Parse("nf4"),
            GradientCheckpointing: true, CheckpointsOnHost: true));
        Assert.True(built.Model.modules().OfType<LlamaModel>().Single().CheckpointsOnHost);
    }
}
