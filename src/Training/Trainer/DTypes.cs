using QLoraNet.Training.Config;
using static TorchSharp.torch;

namespace QLoraNet.Training.Trainer;

/// <summary>Config enums to TorchSharp/schedule values.</summary>
public static class DTypes
{
    public static ScalarType ToScalar(DType d) => d switch
    {
        DType.Bf16 => ScalarType.BFloat16,
        DType.Fp16 => ScalarType.Float16,
        _ => ScalarType.Float32,
    };

    public static string Name(SchedulerKind k) => k.ToString().ToLowerInvariant();
}
