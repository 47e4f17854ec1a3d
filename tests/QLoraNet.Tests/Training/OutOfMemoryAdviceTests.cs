using System.Runtime.InteropServices;
using QLoraNet.Training.Config;
using QLoraNet.Training.Trainer;

namespace QLoraNet.Tests.Training;

/// <summary>An out-of-memory step is said as the settings to change (<see cref="OutOfMemoryAdvice"/>).</summary>
[Trait("tier", "unit")]
public class OutOfMemoryAdviceTests
{
    const string Cuda = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.81 GiB of which 1.12 GiB is free.\nException raised from malloc at ...";

    [Fact]
    public void Libtorchs_out_of_memory_errors_are_recognised_and_nothing_else()
    {
        Assert.True(OutOfMemoryAdvice.IsOutOfMemory(new ExternalException(Cuda)));
        Assert.True(OutOfMemoryAdvice.IsOutOfMemory(new ExternalException("[enforce fail at alloc_cpu.cpp:117] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes.")));
        Assert.False(OutOfMemoryAdvice.IsOutOfMemory(new ExternalException("shape '[4, 512]' is invalid for input of size 100")));
        Assert.False(OutOfMemoryAdvice.IsOutOfMemory(new InvalidOperationException("out of memory")));   // not libtorch's
    }

    [Fact]
    public void Fragmentation_libtorch_reports_brings_the_expandable_segments_advice_unless_they_are_on()
    {
        // The message of a run on the H200 (session 31, call 30), cut.
        var e = new ExternalException("CUDA out of memory. Tried to allocate 14.78 GiB. GPU 0 has a total capacity of 139.80 GiB of which 3.26 GiB is free. "
            + "Including non-PyTorch memory, this process has 136.53 GiB memory in use. Of the allocated memory 94.90 GiB is allocated by PyTorch, "
            + "and 40.96 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True");
        var t = new TrainingConfig();
        Assert.EndsWith(", or set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (40.96 GiB were reserved but unused)", OutOfMemoryAdvice.For(e, 1, t, 4096, null));
        Assert.DoesNotContain("expandable", OutOfMemoryAdvice.For(e, 1, t, 4096, "expandable_segments:True"));
        Assert.DoesNotContain("expandable", OutOfMemoryAdvice.For(new ExternalException(Cuda), 1, t, 4096, null));   // no such figure: no advice
    }

    [Fact]
    public void The_line_names_the_step_the_allocation_and_the_settings_to_change()
    {
        var t = new TrainingConfig(MicroBatchSize: 8, UncheckpointedLayers: 4);
        Assert.Equal("out of memory in step 3 (tried to allocate 2.00 GiB) with training.micro_batch_size 8 x data.max_seq_len 2048: "
            + "lower training.micro_batch_size (raise training.gradient_accumulation_steps to keep the batch), shorten data.max_seq_len, "
            + "or keep fewer layers uncheckpointed (training.uncheckpointed_layers: 4)",
            OutOfMemoryAdvice.For(new ExternalException(Cuda), 3, t, 2048, null));
        Assert.EndsWith("shorten data.max_seq_len, or turn on training.gradient_checkpointing",
            OutOfMemoryAdvice.For(new ExternalException("DefaultCPUAllocator: can't allocate memory"), 1, t with { GradientCheckpointing = false }, 512, null));
    }
}
