using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// Switching a model's LoRA adapters off for a while: <c>using (model.DisableAdapters()) { ... }</c> computes with
/// the frozen base alone and restores each adapter's previous state at the end (peft's disable_adapter context,
/// torchtune's disable_adapter). One model then serves as its own reference, as DPO's reference model needs.
/// Run that reference forward without gradients (torch.no_grad): under gradient checkpointing a graph-building
/// forward recomputes its layers during backward, with the adapters as they are by then.
/// </summary>
public static class AdapterSwitch
{
    public static IDisposable DisableAdapters(this nn.Module model)
    {
        var adapters = model.modules().OfType<LoraLinear>().Select(l => (Lora: l, Was: l.Disabled)).ToList();
        foreach (var (lora, _) in adapters) lora.Disabled = true;
        return new Restore(adapters);
    }

    sealed class Restore(List<(LoraLinear Lora, bool Was)> adapters) : IDisposable
    {
        public void Dispose()
        {
            foreach (var (lora, was) in adapters) lora.Disabled = was;
        }
    }
}
