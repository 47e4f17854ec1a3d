using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// Tensors an autograd function's forward saves for backward must outlive the forward call: TorchSharp hands the
/// list given to save_for_backward to libtorch only after forward has returned, so a tensor disposed by forward's
/// own dispose scope would be gone by then. <see cref="Keep"/> gives it a handle in the caller's scope instead
/// (libtorch's saved variable then holds the storage for backward).
/// </summary>
internal static class SavedTensors
{
    /// <summary>A new handle on the same storage, owned by the scope around the current one.</summary>
    public static Tensor Keep(Tensor t) => t.alias().MoveToOuterDisposeScope();
}
