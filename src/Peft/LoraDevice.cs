using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// TorchSharp records which device a module is on (protected _deviceType/_deviceIndex) and skips a `.to(device)`
/// that matches the record; a new module is recorded as on the CPU. LoRA modules are built next to their base,
/// possibly on a GPU, so they record the device their tensors really live on, or a later `.to(CPU)` would be skipped.
/// </summary>
internal static class LoraDevice
{
    public static (DeviceType type, int index) RecordFor(Tensor stored) =>
        (stored.device_type, stored.device_type == DeviceType.CUDA ? stored.device_index : -1);
}
