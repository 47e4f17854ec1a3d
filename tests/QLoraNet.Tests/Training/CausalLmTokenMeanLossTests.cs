using QLoraNet.Kernels;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Tests.Models;
using QLoraNet.Training.Data;
using QLoraNet.Training.Losses;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Training;

/// <summary>
/// The training loss through the model's own head in chunks (never the full fp32 logits) against the loss of the
/// full logits (model.forward, CausalLmLoss.Sum), on the tiny Llama (tied head) with LoRA on q/v: the same sum and the
/// same LoRA gradients, within fp32's summation-order bound; and without gradients (evaluation) the same sum. (A head
/// with trainable parameters: ChunkedCrossEntropyTests.)
/// </summary>
[Trait("tier", "unit")]
public class CausalLmTokenMeanLossTests
{
    static Batch TwoRows()
    {
        var data = new RandomTokenBatches(32000, rows: 2, length: 24, seed: 3);
        var b = data.Next();
        var labels = (long[])b.Labels.Clone();
        for (int i = 0; i < 5; i++) labels[i] = TokenizedExample.IgnoreIndex;   // a prompt at the start of row 0
        return b with { Labels = labels };
    }

    [Fact]
    public void Chunked_loss_and_lora_gradients_equal_those_of_the_full_logits()
    {
        using var model = TinyLlamaFixture.Load();
        LoraApplier.Apply(model, new LoraSettings(R: 4, Alpha: 8, Dropout: 0, TargetModules: ["q_proj", "v_proj"]), seed: 1);
        using (no_grad())
            foreach (var (_, lora) in AdapterFiles.LoraModules(model)) lora.B.copy_(randn(lora.B.shape, generator: new Generator(2)) * 0.05);
        var loras = AdapterFiles.LoraModules(model).Select(l => l.lora).ToList();
        var batch = TwoRows();
        // 7 tokens per chunk: 48 positions in 7 chunks, the last one short.
        var chunked = new CausalLmTokenMeanLoss(logitsPerChunk: 7 * 32000);

        Tensor[] Grads(Func<Tensor> loss, out double value)
        {
            foreach (var l in loras) { l.A.grad = null; l.B.grad = null; }
            using var scope = NewDisposeScope();
            var sum = loss();
            value = sum.item<float>();
            sum.backward();
            model.BackwardHandles.Release();
            return loras.SelectMany(l => new[] { l.A.grad!.clone().DetachFromDisposeScope(), l.B.grad!.clone().DetachFromDisposeScope() }).ToArray();
        }

        var expected = Grads(() =>
        {
            var x = batch.ToTensors(model.Device);
            return CausalLmLoss.Sum(model.forward(x.InputIds, x.PositionIds, x.AttentionMask, null), x.Labels);
        }, out double full);
        var actual = Grads(() => chunked.Sum(model, batch), out double sum);
        // The same per-token losses summed in another order: |difference| <= 2 N u |sum| (N = 48 terms, fp32).
        Assert.True(Math.Abs(sum - full) <= 2 * 48 * Math.Pow(2, -24) * Math.Abs(full), $"{sum:R} vs {full:R}");
        for (int i = 0; i < expected.Length; i++)
            Assert.True(actual[i].allclose(expected[i], rtol: 1e-4, atol: 1e-7),
                $"gradient {i} ({(i % 2 == 0 ? "A" : "B")} of adapter {i / 2}) differs by {(actual[i] - expected[i]).abs().max().item<float>()}");
        Assert.Contains(expected, g => g.abs().max().item<float>() > 0);
        Assert.Equal(42L, chunked.Count(batch));

        using var noGrad = no_grad();
        using var evaluated = chunked.Sum(model, batch);
        Assert.False(evaluated.requires_grad);
        // Without a graph each layer adds its MLP residual inside the (bare) down projection's GEMM, rounding the fp32
        // sum once where the training forward above rounds the product and then the sum (Quant.ResidualProduct): each
        // per-token loss moves by a few fp32 ulps of itself, so the sum of these positive terms by a few u |sum|,
        // within the bound above.
        Assert.True(Math.Abs(evaluated.item<float>() - sum) <= 2 * 48 * Math.Pow(2, -24) * Math.Abs(sum), $"{evaluated.item<float>():R} vs {sum:R}");
    }
}
