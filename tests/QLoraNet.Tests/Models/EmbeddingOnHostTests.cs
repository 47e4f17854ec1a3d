using QLoraNet.Formats;
using QLoraNet.Kernels;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Tests.Models.Families;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models;

/// <summary>
/// training.embedding_on_host on the CPU, where the host is the device: the gather's reference is index_select (and
/// the op tallies it), a model asked to keep its table on the host computes the same logits under the same state-dict
/// names, and a head tied to the embedding is refused by the key's name. The kernel path (pinned table, rows gathered
/// by the GPU) is held to the table bit for bit by its self-check on the device and, compiled as C++, by
/// tests/KernelsOnCpu/check_embedding.cpp.
/// </summary>
[Trait("tier", "unit")]
public class EmbeddingOnHostTests
{
    [Fact]
    public void The_gathers_reference_is_index_select_and_is_tallied()
    {
        using var scope = NewDisposeScope();
        var gather = FusedKernels.Reference().HostEmbedding;
        Assert.Equal(FusedPath.TorchOps, gather.Path);
        var table = arange(40, ScalarType.Float32).reshape(10, 4);
        var ids = tensor(new long[] { 9, 0, 3, 3 }).reshape(2, 2);
        var (_, before) = gather.Calls;
        var rows = gather.Gather(table, ids);
        Assert.Equal(new long[] { 4, 4 }, rows.shape);
        Assert.True(rows.eq(table.index_select(0, ids.reshape(-1))).all().item<bool>());
        Assert.Equal(before + 1, gather.Calls.Reference);
        Assert.Throws<ArgumentException>(() => gather.Gather(arange(8), ids));
    }

    [Fact]
    public void A_model_with_its_table_on_the_host_computes_the_same_logits_under_the_same_names()
    {
        using var scope = NewDisposeScope();
        var dir = FamilyReference.DirOf("mistral");                                     // an untied head
        using var onDevice = ModelBuilder.Build(dir, new ModelBuildOptions(CPU, ScalarType.Float32, BaseFormat.Parse("nf4")));
        using var onHost = ModelBuilder.Build(dir, new ModelBuildOptions(CPU, ScalarType.Float32, BaseFormat.Parse("nf4"), EmbeddingOnHost: true));
        var ids = tensor(new long[] { 1, 5, 9, 2, 7, 3 }).reshape(1, 6);
        using (no_grad())
            Assert.True(onHost.Model.forward(ids).eq(onDevice.Model.forward(ids)).all().item<bool>());
        Assert.Equal(onDevice.Model.state_dict().Keys.OrderBy(k => k), onHost.Model.state_dict().Keys.OrderBy(k => k));
        Assert.Contains("model.embed_tokens.weight", onHost.Model.state_dict().Keys);
        Assert.Equal(CPU.type, onHost.Model.Device.type);
        Assert.False(onHost.Model.Model.EmbedTokens.IsOnHost);                            // on a CPU the table is already on the host
    }

    [Fact]
    public void A_head_tied_to_the_embedding_is_refused_by_the_keys_name()
    {
        var e = Assert.Throws<ArgumentException>(() => ModelBuilder.Build(Paths.TinyModel,
            new ModelBuildOptions(CPU, ScalarType.Float32, BaseFormat.Parse("none"), EmbeddingOnHost: true)));
        Assert.Contains("training.embedding_on_host", e.Message);
        Assert.Contains("tie_word_embeddings", e.Message);
    }
}
