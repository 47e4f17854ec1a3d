using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// Refuses a float tensor that holds NaN or Inf: such weights load and run silently, and every output after them
/// is garbage. Checked in slices of <see cref="SliceElements"/> so the boolean mask stays small next to a large
/// embedding; integer tensors (packed 4-bit codes, ids) cannot hold either and are skipped.
/// </summary>
public static class FiniteCheck
{
    const long SliceElements = 1L << 24;

    /// <summary>Throws an <see cref="InvalidDataException"/> starting with <paramref name="what"/>() when <paramref name="t"/> holds NaN or Inf.</summary>
    public static void Require(Tensor t, Func<string> what)
    {
        if (!t.is_floating_point() || t.numel() == 0) return;
        using var scope = NewDisposeScope();
        var flat = t.reshape(-1);
        long n = flat.shape[0];
        for (long start = 0; start < n; start += SliceElements)
        {
            var slice = flat.narrow(0, start, Math.Min(SliceElements, n - start));
            if (slice.isfinite().all().item<bool>()) continue;
            long nan = flat.isnan().sum().item<long>(), inf = flat.isinf().sum().item<long>();
            throw new InvalidDataException(
                $"{what()} holds {nan} NaN and {inf} Inf values of {n}; the file is corrupt or comes from a diverged run " +
                "(pass --allow-non-finite-weights, or model.allow_non_finite_weights: true, to load it anyway)");
        }
    }
}
