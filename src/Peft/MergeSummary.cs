using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>What <see cref="MergedCheckpoint.Write"/> wrote: merged modules, tensors, shard files, dtype and bytes.</summary>
public sealed record MergeSummary(int MergedModules, int Tensors, IReadOnlyList<string> Shards, ScalarType DType, long Bytes);
