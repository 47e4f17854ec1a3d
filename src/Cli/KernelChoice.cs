using QLoraNet.Quant.Kernels;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// The CLI's side of kernel selection: reads the switches from the environment (QLORANET_DISABLE_CUDA_KERNELS=1 to
/// compare against torch ops, QLORANET_PTX_DIR=dir to load dir/NAME.ptx under development instead of the embedded
/// PTX, QLORANET_TORCH_WEIGHT_GRADIENTS=1 to run LoRA's factor gradients through torch ops instead of cuBLAS) and makes the one <see cref="KernelSelection"/> a verb passes down; its report is what `info` and the training
/// summary print.
/// </summary>
public static class KernelChoice
{
    public static KernelOptions Options() => new(
        DisableCuda: Environment.GetEnvironmentVariable("QLORANET_DISABLE_CUDA_KERNELS") == "1",
        PtxDir: Environment.GetEnvironmentVariable("QLORANET_PTX_DIR"),
        TorchWeightGradients: Environment.GetEnvironmentVariable("QLORANET_TORCH_WEIGHT_GRADIENTS") == "1");

    public static KernelSelection For(Device device) => KernelSelection.For(device, Options());
}
