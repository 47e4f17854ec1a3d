namespace QLoraNet.Kernels;

/// <summary>The phases of a training step, as a profiler attributes the device's work to them.</summary>
public enum StepPhase
{
    /// <summary>The loss's forward pass (checkpointed layers run without a graph).</summary>
    Forward,

    /// <summary>A checkpointed layer's second forward, with a graph, inside backward.</summary>
    Recompute,

    /// <summary>Back-propagation proper.</summary>
    Backward,

    /// <summary>Gradient sum over replicas, clipping, AdamW, zeroing the gradients.</summary>
    Optimizer,

    /// <summary>The step is over: what follows belongs to no phase (the host preparing the next step).</summary>
    Done,
}

/// <summary>
/// Receives the boundaries of a training step's phases, for profiling (`bench train --profile` records a CUDA event
/// at each): from a call on, the work enqueued belongs to that phase. The step marks its own phases; checkpointed
/// layers mark their recomputation inside backward, through the model's <see cref="BackwardHandles"/>, the one
/// per-model object every backward sees. Implementations must accept calls from libtorch's autograd thread.
/// </summary>
public interface IStepPhaseMarker
{
    void Enter(StepPhase phase);
}
