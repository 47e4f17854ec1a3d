using QLoraNet.Formats;
using QLoraNet.Quant;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>How <see cref="MergedCheckpoint.Write"/> writes a merged model.</summary>
/// <param name="DType">dtype of the written float tensors; null = the checkpoint's own (its most common float dtype).</param>
/// <param name="BaseFormat">the frozen format the adapter was trained on (nf4-dq for QLoRA); null = dense as stored.</param>
/// <param name="Quantization">re-quantize the merged linears to this format and write them under its checkpoint
/// layout (nf4/fp4: bitsandbytes' keys, what transformers' load_in_4bit reads); null = write them dense.</param>
/// <param name="MaxShardBytes">largest safetensors shard.</param>
/// <param name="Overwrite">replace a non-empty output directory (only once the new one is complete).</param>
/// <param name="OnTensor">called with each tensor's name as it is produced (progress; tests inject faults here).</param>
/// <param name="AllowNonFiniteWeights">merge base weights holding NaN/Inf instead of refusing them by name.</param>
/// <param name="AllowNoTokenizer">write a checkpoint without a tokenizer when the base model has none (by default
/// that is refused: the result would not load on its own).</param>
public sealed record MergeOptions(
    ScalarType? DType = null,
    BaseFormat? BaseFormat = null,
    BaseFormat? Quantization = null,
    long MaxShardBytes = CheckpointWriter.DefaultMaxShardBytes,
    bool Overwrite = false,
    Action<string>? OnTensor = null,
    bool AllowNonFiniteWeights = false,
    bool AllowNoTokenizer = false);
