using System.Runtime.CompilerServices;
using QLoraNet.Native;

namespace QLoraNet.Tests;

/// <summary>
/// Loads libtorch before any test touches torch, as the CLI and the QLoraNet facade do: the bundled CPU libtorch sits in
/// libtorch/ beside the test assembly, where only discovery loads it (build/TorchBackend.targets says why).
/// </summary>
static class LibTorchSetup
{
    [ModuleInitializer]
    internal static void Load() => LibTorchDiscovery.EnsureLoaded();
}
