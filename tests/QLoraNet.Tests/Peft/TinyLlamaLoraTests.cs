using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>LoRA on the real tiny Llama (4 layers, hidden 256, 4 kv heads of 32: k/v project to 128).</summary>
[Trait("tier", "unit")]
public class TinyLlamaLoraTests
{
    const string NeedsModuleFields =
        "needs LlamaAttention/LlamaMlp projection fields typed nn.Module<Tensor, Tensor> (they are FrozenLinear, which cannot hold a LoraLinear)";

    static readonly long[] Prompt = [1, 15043, 3186, 29991, 450, 2106];

    [Fact]
    public void DefaultTargetsWrapSixteenProjectionsAndKeepTheLogits()
    {
        using var model = TinyLlamaFixture.Load();
        using var ids = torch.tensor(Prompt).unsqueeze(0);
        // Both forwards without a graph: each layer then adds its MLP residual in the (bare) down projection's GEMM
        // (Quant.ResidualProduct). Under grad the adapted model would build a graph (its adapters require grad) and
        // add after the product instead, which rounds the fp32 sum twice: equal only to a last bit.
        Tensor Logits()
        {
            using var noGrad = torch.no_grad();
            return model.forward(ids);
        }
        using var before = Logits();

        var wrapped = LoraApplier.Apply(model, new LoraSettings(R: 8, Alpha: 16, Dropout: 0.05), seed: 1);
        Assert.Equal(16, wrapped.Count);
        Assert.Contains("model.layers.3.self_attn.k_proj", wrapped);
        model.eval();
        using var after = Logits();
        Assert.True(Bits.Same(before, after));

        // 4 layers x r 8 x ((256+256) q + (256+128) k + (256+128) v + (256+256) o); 11,094,272 weights (README).
        var count = TrainableParameters.Count(model);
        Assert.Equal(57_344, count.Trainable);
        Assert.Equal(11_094_272 + 57_344, count.Total);
        Assert.Equal("trainable 57.3K of 11.2M (0.51%)", count.ToString());
    }

    [Fact]
    public void OnlyLoraGetsGradientsAndTheAdapterRoundTripsWithPeftNames()
    {
        using var model = TinyLlamaFixture.Load();
        var settings = new LoraSettings(R: 4, Alpha: 8, Dropout: 0, TargetModules: [LoraSettings.AllLinear]);
        var wrapped = LoraApplier.Apply(model, settings, seed: 2);
        Assert.Equal(28, wrapped.Count);  // 7 per layer; the head is tied to the embedding: no lm_head module

        using (var scope = NewDisposeScope())
        {
            using var ids = torch.tensor(Prompt).unsqueeze(0);
            CausalLmLoss.Compute(model.forward(ids), ids).backward();
        }
        foreach (var (name, p) in model.named_parameters())
            Assert.True(AdapterKeys.IsLoraParameter(name) == (p.grad is not null), name);
        using (torch.no_grad())
            foreach (var (_, lora) in AdapterFiles.LoraModules(model)) lora.B.add_(lora.B.grad!, alpha: -1.0);

        using var dir = Paths.Temp();
        AdapterFiles.Save(dir.Path, model, AdapterConfig.From(settings, wrapped, Paths.TinyModel));
        using (var f = SafeTensorsFile.Open(dir[AdapterFiles.WeightsFileName]))
        {
            Assert.Equal(new long[] { 4, 256 }, f.Info("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").Shape);
            Assert.Equal(new long[] { 128, 4 }, f.Info("base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight").Shape);
            Assert.Equal(new long[] { 4, 688 }, f.Info("base_model.model.model.layers.3.mlp.down_proj.lora_A.weight").Shape);
        }
        using var fresh = TinyLlamaFixture.Load();
        AdapterFiles.ApplyAndLoad(dir.Path, fresh);
        using var x = torch.tensor(Prompt).unsqueeze(0);
        Assert.True(Bits.Same(model.forward(x), fresh.forward(x)));
    }
}
