using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// The one place that asks whether libtorch sees a GPU: "auto" picks CUDA when it does, "cuda" without one is an
/// error naming where the choice came from (<c>--device</c>, <c>model.device</c>).
/// </summary>
public static class DeviceChoice
{
    public static readonly string[] Names = ["auto", "cpu", "cuda"];

    public static Device Resolve(string name, string source) => name switch
    {
        "cpu" => CPU,
        "cuda" when !cuda.is_available() => throw new InvalidOperationException(
            $"{source} is cuda but libtorch sees no CUDA device; use cpu, or the `system` backend with a CUDA libtorch (README, Backends)"),
        "cuda" => CUDA,
        "auto" => cuda.is_available() ? CUDA : CPU,
        _ => throw new ArgumentException($"{source} '{name}' is not a device; use {string.Join(", ", Names)}"),
    };
}
