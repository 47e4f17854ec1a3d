using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>
/// How the frozen base linears are stored. Defaults follow QLoRA (Dettmers et al. 2023): NF4 with double
/// quantization (the absmax constants quantized again to 8 bits), blocks of 64 weights, bf16 compute.
/// </summary>
public sealed record QuantizationConfig(
    QuantType Type = QuantType.Nf4,
    bool DoubleQuant = true,
    int BlockSize = 64,
    DType ComputeDtype = DType.Bf16)
{
    internal static QuantizationConfig Bind(ConfigSection s)
    {
        var type = s.Enum("type", QuantType.Nf4);
        var doubleQuantSet = s.OptionalBool("double_quant");
        var blockSize = s.Int("blocksize", 64, 16, 4096);
        var computeDtype = s.Enum("compute_dtype", DType.Bf16);
        s.Finish();
        // Blocks tile rows of the weight; a power of two divides every Llama hidden size (bitsandbytes allows 64..4096).
        if ((blockSize & (blockSize - 1)) != 0)
            throw s.ErrorAt("blocksize", $"'{s.Full("blocksize")}' must be a power of two in [16, 4096]; got {blockSize}");
        bool fourBitFloat = type is QuantType.Nf4 or QuantType.Fp4;
        if (doubleQuantSet == true && !fourBitFloat)
            throw s.ErrorAt("double_quant", $"'{s.Full("double_quant")}' applies to nf4 and fp4 only; set it to false for {YamlNames.Of(type)}");
        return new QuantizationConfig(type, doubleQuantSet ?? fourBitFloat, blockSize, computeDtype);
    }

    internal YamlMappingNode ToYaml() => YamlOut.Map(
        ("type", YamlOut.Scalar(Type)), ("double_quant", YamlOut.Scalar(DoubleQuant)),
        ("blocksize", YamlOut.Scalar(BlockSize)), ("compute_dtype", YamlOut.Scalar(ComputeDtype)));
}
