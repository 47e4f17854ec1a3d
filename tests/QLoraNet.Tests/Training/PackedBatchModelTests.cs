using QLoraNet.Models;
using QLoraNet.Tests.Models;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Training;

/// <summary>Packed batches through the real tiny Llama: packing must not change what any example sees.</summary>
[Trait("tier", "unit")]
public sealed class PackedBatchModelTests : IDisposable
{
    readonly TempDir dir = Paths.Temp();

    public void Dispose() => dir.Dispose();

    static double SummedLoss(LlamaForCausalLM model, Batch batch, bool blockMask = true)
    {
        using var scope = NewDisposeScope();
        using var t = batch.ToTensors(CPU);
        var mask = blockMask ? t.AttentionMask : AttentionMask.Causal(batch.Length, batch.Length, CPU);
        using var _ = no_grad();
        var logits = model.forward(t.InputIds, t.PositionIds, mask, null);
        long counted = t.Labels[.., 1..].ne(TokenizedExample.IgnoreIndex).sum().item<long>();
        return CausalLmLoss.Compute(logits, t.Labels).item<float>() * counted;
    }

    [Fact]
    public void Packed_loss_equals_the_sum_of_the_examples_losses()
    {
        string file = dir["few.jsonl"];
        File.WriteAllLines(file, File.ReadLines(Path.Combine(Paths.RepoRoot, "datasets/sales/train.jsonl")).Take(3));
        DataConfig Cfg(bool packing) => new([file], null, 0, DataFormat.Chat, TemplateKind.Llama2Chat, null, 256, packing,
            false, false, new ColumnMapping());
        var packed = TrainingData.Build(Cfg(true), TokenizerAndTemplateTests.Tok, 0);
        var single = TrainingData.Build(Cfg(false), TokenizerAndTemplateTests.Tok, 0);
        Assert.True(packed.Train.Count < single.Train.Count);

        using var model = TinyLlamaFixture.Load();
        var packedBatch = Batch.Collate(packed.Train, 0);
        double packedLoss = SummedLoss(model, packedBatch);
        double separate = single.Train.Sum(s => SummedLoss(model, Batch.Collate([s], 0)));
        Assert.Equal(separate, packedLoss, separate * 1e-4);
        // Without the block-diagonal mask later examples see earlier ones and the loss changes.
        Assert.NotEqual(separate, SummedLoss(model, packedBatch, blockMask: false), separate * 1e-3);
    }
}
