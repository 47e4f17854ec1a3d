using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// The fused training ops of one run, each with the path it takes and why: made once for a device by the caller's
/// kernel selection (Quant's KernelSelection.For, which the CLI makes) and passed down to whatever runs an op
/// (the model's norms, RoPE and MLP, LoRA's dropout, the optimizer, the loss). On CUDA every op's PTX is loaded up
/// front; one that fails to load is reported with the driver's reason and that op runs its torch-op reference,
/// never a silent swap mid-run. On the CPU every op runs its reference. <see cref="Report"/> is what `info` and the
/// training summary print; each op also tallies the calls each path served (<see cref="CallCounts"/>).
/// </summary>
public sealed class FusedKernels
{
    FusedKernels(string device, FusedRmsNorm rmsNorm, FusedRope rope, FusedGlu glu, FusedDropout dropout, FusedAdamW adamW,
        FusedCrossEntropy crossEntropy, HostEmbeddingGather hostEmbedding, FusedWeightGradient weightGradient, long logitsPerChunk)
    {
        CrossEntropy = crossEntropy;
        HostEmbedding = hostEmbedding;
        WeightGradient = weightGradient;
        Device = device;
        RmsNorm = rmsNorm;
        Rope = rope;
        Glu = glu;
        Dropout = dropout;
        AdamW = adamW;
        LogitsPerChunk = logitsPerChunk;
    }

    /// <summary>"cpu", "cuda": the device the choices were made for, as reports spell it.</summary>
    public string Device { get; }

    /// <summary>RMSNorm, alone or with the residual add in front.</summary>
    public FusedRmsNorm RmsNorm { get; }

    /// <summary>Rotary position embedding of q and k.</summary>
    public FusedRope Rope { get; }

    /// <summary>SwiGLU / GeGLU: act(gate) * up.</summary>
    public FusedGlu Glu { get; }

    /// <summary>LoRA's inverted dropout with RandomStream's mask.</summary>
    public FusedDropout Dropout { get; }

    /// <summary>One AdamW launch for every adapter parameter (a <see cref="MultiTensorAdamW"/> per optimizer uses it).</summary>
    public FusedAdamW AdamW { get; }

    /// <summary>The training loss's chunk: loss and gradient written over its logits in the compute dtype.</summary>
    public FusedCrossEntropy CrossEntropy { get; }

    /// <summary>Embedding rows gathered from a table in pinned host memory (training.embedding_on_host).</summary>
    public HostEmbeddingGather HostEmbedding { get; }

    /// <summary>LoRA's factor gradients accumulated into their fp32 .grad inside the GEMM (cuBLAS on CUDA).</summary>
    public FusedWeightGradient WeightGradient { get; }

    /// <summary>Logits per chunk of the training loss (<see cref="ChunkedCrossEntropy"/>): the full fp32 logits are never made.</summary>
    public long LogitsPerChunk { get; }

    /// <summary>Every op's torch-op reference, for tests and library callers that chose nothing.</summary>
    public static FusedKernels Reference(string reason = "no selection made: torch-op references") =>
        References("cpu", reason, ChunkedCrossEntropy.DefaultLogitsPerChunk);

    /// <summary>
    /// The choices for <paramref name="device"/>: on CUDA, each op's kernel unless <paramref name="disableCuda"/>, the
    /// PTX is not in this build, or it fails to load (each reported); elsewhere the references.
    /// </summary>
    /// <param name="ptxDir">load NAME.ptx from this directory where it holds one instead of the embedded image (kernel development).</param>
    /// <param name="logitsPerChunk">the training loss's chunk (<see cref="ChunkedCrossEntropy.DefaultLogitsPerChunk"/>).</param>
    /// <param name="torchWeightGradients">LoRA's factor gradients through their torch-op reference even where cuBLAS is there.</param>
    public static FusedKernels Load(Device device, bool disableCuda = false, string? ptxDir = null,
        long logitsPerChunk = ChunkedCrossEntropy.DefaultLogitsPerChunk, bool torchWeightGradients = false)
    {
        string name = device.type.ToString().ToLowerInvariant();
        if (device.type != DeviceType.CUDA) return References(name, "CPU tensors: torch-op reference", logitsPerChunk);
        if (disableCuda) return References(name, "CUDA kernels disabled by the caller", logitsPerChunk);
        try
        {
            using (zeros(1, device: device)) { }   // libtorch makes its CUDA context current on first use
        }
        catch (Exception e)
        {
            return References(name, $"no usable CUDA device: {FirstLine(e.Message)}", logitsPerChunk);
        }
        return Of(name, op => TryLoad(op.File, op.Kernels, ptxDir), logitsPerChunk, WeightGradientFor(device, torchWeightGradients), device);
    }

    /// <summary>Every op on its torch-op reference, for <paramref name="reason"/>.</summary>
    static FusedKernels References(string device, string reason, long logitsPerChunk) =>
        Of(device, _ => (null, reason), logitsPerChunk, new(null, reason), selfCheckOn: null);

    /// <summary>cuBLAS's GEMM for LoRA's factor gradients when it loads and passes its self-check on the device
    /// (<see cref="FusedWeightGradient.SelfCheck"/>), else the reference with the reason.</summary>
    static FusedWeightGradient WeightGradientFor(Device device, bool torchWeightGradients)
    {
        if (torchWeightGradients) return new(null, "torch-op reference chosen by the caller");
        var (cublas, reason) = Cublas.TryLoad();
        if (cublas is null) return new(null, reason);
        var candidate = new FusedWeightGradient(cublas, $"GEMM with an fp32 C from {reason}, self-checked on the device");
        return candidate.SelfCheck(device) is { } failed ? new(null, failed) : new(cublas, candidate.Reason);
    }

    /// <summary>The PTX file and kernels of each op, for <see cref="Load"/>.</summary>
    sealed record OpKernels(string File, IEnumerable<string> Kernels);

    /// <param name="selfCheckOn">the device a loaded host gather checks itself on (it reads pinned memory from a
    /// kernel: checked on this machine before any run relies on it); null where nothing is loaded.</param>
    static FusedKernels Of(string device, Func<OpKernels, (PtxModule? Module, string Reason)> load, long logitsPerChunk,
        FusedWeightGradient weightGradient, Device? selfCheckOn)
    {
        var rms = load(new(FusedRmsNorm.PtxFile, FusedRmsNorm.KernelNames));
        var rope = load(new(FusedRope.PtxFile, FusedRope.KernelNames));
        var glu = load(new(FusedGlu.PtxFile, FusedGlu.KernelNames));
        var dropout = load(new(FusedDropout.PtxFile, FusedDropout.KernelNames));
        var adamW = load(new(FusedAdamW.PtxFile, FusedAdamW.KernelNames));
        var crossEntropy = load(new(FusedCrossEntropy.PtxFile, FusedCrossEntropy.KernelNames));
        var embedding = load(new(HostEmbeddingGather.PtxFile, HostEmbeddingGather.KernelNames));
        var gather = new HostEmbeddingGather(embedding.Module, embedding.Reason);
        if (embedding.Module is not null && selfCheckOn is not null && gather.SelfCheck(selfCheckOn) is { } failed) gather = new(null, failed);
        return new FusedKernels(device,
            new FusedRmsNorm(rms.Module, rms.Reason), new FusedRope(rope.Module, rope.Reason), new FusedGlu(glu.Module, glu.Reason),
            new FusedDropout(dropout.Module, dropout.Reason), new FusedAdamW(adamW.Module, adamW.Reason),
            new FusedCrossEntropy(crossEntropy.Module, crossEntropy.Reason), gather, weightGradient, logitsPerChunk);
    }

    static (PtxModule?, string) TryLoad(string file, IEnumerable<string> kernels, string? ptxDir)
    {
        var assembly = typeof(FusedKernels).Assembly;
        bool fromDir = ptxDir is not null && File.Exists(Path.Combine(ptxDir, file));
        if (!fromDir && !PtxModule.IsEmbedded(assembly, file))
            return (null, $"{file} is not embedded in this build (scripts/build_ptx.sh)");
        try
        {
            var module = PtxModule.Load(assembly, file, kernels, ptxDir);
            return (module, "fused kernel" + (fromDir ? $" from {module.Source}" : ""));
        }
        catch (Exception e)
        {
            return (null, $"{file} failed to load: {FirstLine(e.Message)}");
        }
    }

    static string FirstLine(string message) => message.Split('\n')[0].Trim();

    /// <summary>One line per op, e.g. "rmsnorm on cuda: cuda-ptx (fused kernel; ...)".</summary>
    public IReadOnlyList<string> Report() =>
    [
        Line("rmsnorm", RmsNorm, "bf16/fp32 rows of up to 8192, a multiple of 8"),
        Line("rope", Rope, "bf16/fp32, head dim a multiple of 16"),
        Line("glu", Glu, "bf16/fp32, a multiple of 8 elements"),
        Line("lora dropout", Dropout, "bf16/fp32, a multiple of 8 elements"),
        Line("adamw", AdamW, "fp32 contiguous parameters, one launch per step"),
        Line("cross-entropy", CrossEntropy, "bf16/fp32 logits, vocabulary a multiple of 8")
            + $"; chunked, {LogitsPerChunk} logits per chunk: the full fp32 logits are never made",
        Line("embedding on host (training.embedding_on_host)", HostEmbedding, "a pinned bf16/fp32 table, rows a multiple of 16 bytes"),
        $"lora up-projection on {Device}: addmm (base + scaling * (x A^T) B^T in one GEMM epilogue, in place)",
        Line("lora weight gradients", WeightGradient, "bf16/fp16 operands of an fp32 contiguous .grad"),
        FunctionOutputCache.Describe,
    ];

    string Line(string op, FusedOp f, string kernelTakes) =>
        $"{op} on {Device}: {FusedOp.Spell(f.Path)} ({f.Reason}" + (f.Path != FusedPath.TorchOps ? $"; torch-ops where a tensor is not {kernelTakes})" : ")");

    /// <summary>Calls each op's kernel and reference served so far (for `bench train --profile`).</summary>
    public IReadOnlyDictionary<string, (long Kernel, long Reference)> CallCounts() => new Dictionary<string, (long, long)>
    {
        ["rmsnorm"] = RmsNorm.Calls, ["rope"] = Rope.Calls, ["glu"] = Glu.Calls, ["lora_dropout"] = Dropout.Calls, ["adamw"] = AdamW.Calls,
        ["lora_weight_gradient"] = WeightGradient.Calls, ["cross_entropy"] = CrossEntropy.Calls,
        ["embedding_on_host"] = HostEmbedding.Calls,
    };
}
