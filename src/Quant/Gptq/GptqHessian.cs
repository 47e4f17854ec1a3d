using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Gptq;

/// <summary>
/// The Hessian of a linear's layer-wise reconstruction loss ||W X - Ŵ X||², H = 2 X X^T (GPTQ eq. 1), accumulated
/// from the calibration inputs that reach the linear, batch by batch, as AutoGPTQ's <c>GPTQ.add_batch</c> keeps it:
/// a running mean over samples, H ← H·n/(n + b) + (2/(n + b))·Σ x x^T for a batch of b samples, in fp32 on the inputs'
/// device. Only ratios of H matter to GPTQ (the damping is relative to its mean diagonal), so the normalisation is a
/// convention. Owns one (in, in) fp32 tensor; dispose when done.
/// </summary>
public sealed class GptqHessian : IDisposable
{
    long _samples;

    public GptqHessian(long inFeatures, Device device)
    {
        Matrix = zeros(inFeatures, inFeatures, ScalarType.Float32, device);
    }

    /// <summary>(in, in) fp32.</summary>
    public Tensor Matrix { get; }

    /// <summary>Samples seen so far.</summary>
    public long Samples => _samples;

    /// <summary>Adds the inputs of one forward: x (batch, ..., in), batch = the number of calibration samples in it.</summary>
    public void Add(Tensor x)
    {
        using var scope = NewDisposeScope();
        long batch = x.dim() >= 3 ? x.shape[0] : 1;
        var rows = x.detach().reshape(-1, x.shape[^1]).to(ScalarType.Float32);        // (tokens, in)
        Matrix.mul_((double)_samples / (_samples + batch));
        _samples += batch;
        addmm_(Matrix, rows.t(), rows, 1f, (float)(2.0 / _samples));
    }

    public void Dispose() => Matrix.Dispose();
}
