using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using QLoraNet.Training.Config;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// A step that ran out of memory, said as what to change in the config. libtorch names the allocation ("CUDA out of
/// memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of ...", or the CPU allocator's "can't allocate
/// memory"), not the settings that decide it; the error line names those, with the allocation that failed.
/// </summary>
public static partial class OutOfMemoryAdvice
{
    /// <summary>Whether <paramref name="e"/> is libtorch's out-of-memory error (CUDA's caching allocator or the CPU's).</summary>
    public static bool IsOutOfMemory(Exception e) =>
        e is ExternalException && (e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase)
                                   || e.Message.Contains("can't allocate memory", StringComparison.Ordinal));

    /// <summary>The caching allocator's configuration as libtorch reads it from this process's environment:
    /// PYTORCH_ALLOC_CONF (PyTorch 2.9's name), else PYTORCH_CUDA_ALLOC_CONF (the older one, still read); null when
    /// neither is set. (The CLI sets the older one where the user set neither: Native's CudaAllocatorDefaults.)</summary>
    public static string? AllocatorConfigOfProcess() =>
        Environment.GetEnvironmentVariable("PYTORCH_ALLOC_CONF") ?? Environment.GetEnvironmentVariable("PYTORCH_CUDA_ALLOC_CONF");

    /// <summary>The one-line error for an out-of-memory in step <paramref name="step"/> (1-based).</summary>
    /// <param name="allocatorConfig">the allocator's configuration (<see cref="AllocatorConfigOfProcess"/>; null: unset).</param>
    public static string For(Exception e, int step, TrainingConfig t, int maxSeqLen, string? allocatorConfig)
    {
        var asked = TriedToAllocate().Match(e.Message);
        string what = asked.Success ? $" (tried to allocate {asked.Groups[1].Value})" : "";
        string checkpointing = !t.GradientCheckpointing ? ", or turn on training.gradient_checkpointing"
            : t.UncheckpointedLayers > 0 ? $", or keep fewer layers uncheckpointed (training.uncheckpointed_layers: {t.UncheckpointedLayers})" : "";
        // CUDA's caching allocator keeps freed blocks for reuse; blocks of the wrong sizes pile up as "reserved but
        // unallocated" (fragmentation). Expandable segments map memory into growable segments instead (PyTorch's
        // own advice in this message); the benchmarks in docs/BENCHMARKS.md run with them.
        var idle = ReservedButUnallocated().Match(e.Message);
        string fragmentation = idle.Success && double.TryParse(idle.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture, out double gib)
            && gib >= 1 && !(allocatorConfig ?? "").Contains("expandable_segments:True", StringComparison.Ordinal)
            ? $", or set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True ({idle.Groups[1].Value} GiB were reserved but unused)" : "";
        return $"out of memory in step {step}{what} with training.micro_batch_size {t.MicroBatchSize} x data.max_seq_len {maxSeqLen}: "
            + "lower training.micro_batch_size (raise training.gradient_accumulation_steps to keep the batch), shorten data.max_seq_len"
            + checkpointing + fragmentation;
    }

    [GeneratedRegex(@"[Tt]ried to allocate ([0-9.]+ ?[KMGT]?i?B)")]
    private static partial Regex TriedToAllocate();

    [GeneratedRegex(@"([0-9.]+) GiB is reserved by PyTorch but unallocated")]
    private static partial Regex ReservedButUnallocated();
}
