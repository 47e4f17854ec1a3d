using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// When an op may launch its forward kernel directly instead of going through its autograd function: when no
/// graph will be built (grad mode off, as in a checkpointed layer's first forward, or no input requires grad).
/// The function's own cost per call (TorchSharp's node, output wrapping, saved tensors) is then avoided; `bench
/// kernel` measured it at tens of microseconds of host time, several times the kernels' device time.
/// </summary>
public static class KernelPath
{
    public static bool NeedsGraph(params Tensor?[] inputs) =>
        torch.is_grad_enabled() && inputs.Any(t => t is not null && t.requires_grad);
}
