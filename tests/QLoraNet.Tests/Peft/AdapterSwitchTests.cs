using QLoraNet.Peft;
using QLoraNet.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

[Trait("tier", "unit")]
public class AdapterSwitchTests
{
    static readonly long[] Prompt = [1, 15043, 3186, 29991, 450, 2106];

    [Fact]
    public void With_adapters_disabled_the_model_computes_the_base_exactly_and_they_come_back_after()
    {
        using var model = TinyLlamaFixture.Load();
        model.eval();
        using var ids = torch.tensor(Prompt).unsqueeze(0);
        using var baseLogits = model.forward(ids);

        LoraApplier.Apply(model, new LoraSettings(R: 4, Alpha: 8, Dropout: 0, TargetModules: [LoraSettings.AllLinear]), seed: 3);
        using (torch.no_grad())
            foreach (var (_, lora) in AdapterFiles.LoraModules(model)) lora.B.fill_(0.01f);
        using var adapted = model.forward(ids);
        Assert.False(adapted.allclose(baseLogits, rtol: 0, atol: 1e-3), "the adapters must change the logits");

        using (model.DisableAdapters())
        {
            using var disabled = model.forward(ids);
            Assert.True(Bits.Same(baseLogits, disabled));
        }
        using var restored = model.forward(ids);
        Assert.True(Bits.Same(adapted, restored));
    }

    [Fact]
    public void Disabling_restores_each_adapters_previous_state()
    {
        using var model = new TinyTestModel(layers: 1);
        LoraApplier.Apply(model, new LoraSettings(R: 2));
        var loras = AdapterFiles.LoraModules(model).Select(l => l.lora).ToList();
        loras[0].Disabled = true;
        using (model.DisableAdapters())
            Assert.All(loras, l => Assert.True(l.Disabled));
        Assert.True(loras[0].Disabled);
        Assert.All(loras.Skip(1), l => Assert.False(l.Disabled));
    }
}
