using System.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Gptq;

/// <summary>What GPTQ decided for one weight: codes (out, in) int64 in [0, maxq], grids per output row and group
/// (scales (out, groups) and zero points (out, groups), in the solver's dtype), and the group of each input column.</summary>
public sealed record GptqSolution(Tensor Codes, Tensor Scales, Tensor Zeros, Tensor GIdx) : IDisposable
{
    public void Dispose()
    {
        Codes.Dispose();
        Scales.Dispose();
        Zeros.Dispose();
        GIdx.Dispose();
    }
}

/// <summary>
/// GPTQ's solver (Frantar et al. 2022, Algorithm 1), with the semantics of AutoGPTQ's <c>GPTQ.fasterquant</c>
/// (static_groups off), in torch ops on the weight's device (on the CPU, each block's column steps in a host loop that
/// gives the same bits: <see cref="QuantizeBlockOnHost{T}"/>):
/// <list type="number">
/// <item>dead inputs (H_jj = 0) get H_jj = 1 and W[:, j] = 0; with act-order the columns are permuted by decreasing
/// H_jj (a stable sort here; AutoGPTQ's argsort breaks ties arbitrarily);</item>
/// <item>damping λ = percdamp · mean(diag H) is added to the diagonal (section 4 "Cholesky Reformulation");</item>
/// <item>U = the upper Cholesky factor of H^-1 (its row q is row q of the inverse Hessian of the columns q.. not yet
/// quantized, divided by the square root of its diagonal entry: the paper's step 3);</item>
/// <item>columns are quantized in blocks of <c>blockSize</c> (lazy batch updates, step 2): inside a block, column q is
/// rounded to its grid, err = (w_q - Q(w_q)) / U_qq, and err · U[q, q:] is subtracted from the block's remaining
/// columns; after the block, the collected errors update all later columns at once.</item>
/// </list>
/// Grids: per output row, symmetric (AutoGPTQ's Quantizer with sym=True: xmax = max(|min(x, 0)|, max(x, 0)),
/// xmin = -xmax when the row has a negative value (else 0), scale = (xmax - xmin) / maxq, zero = (maxq + 1) / 2,
/// q = clamp(round(x / scale) + zero, 0, maxq)); per channel from the original weight, or per group, found when the
/// group's first column is reached from the weights as updated by all previous blocks (AutoGPTQ reads
/// <c>W[:, i:i+g]</c> there, which does not yet hold the current block's updates; kept for identical results).
/// Codes come back in the original column order and g_idx maps each input to its group (a permutation of i / g
/// under act-order). Arithmetic in the weight's dtype when it is fp64 (tests), else fp32.
/// </summary>
public static class GptqSolver
{
    public const double DefaultPercDamp = 0.01;
    public const int DefaultBlockSize = 128;

    /// <param name="weight">W (out, in), float.</param>
    /// <param name="hessian">H (in, in), e.g. <see cref="GptqHessian.Matrix"/>; not modified.</param>
    public static GptqSolution Solve(Tensor weight, Tensor hessian, GptqFormat format, double percDamp = DefaultPercDamp,
        int blockSize = DefaultBlockSize, string? name = null) =>
        Solve(weight, hessian, format, percDamp, blockSize, name, columnsOnHost: null);

    /// <param name="columnsOnHost">the in-block column steps on the host (<see cref="QuantizeBlockOnHost{T}"/>) or in
    /// torch ops (<see cref="QuantizeBlockWithTorchOps"/>); null = on the host when the weight is on the CPU. Both give
    /// the same bits; tests compare them.</param>
    internal static GptqSolution Solve(Tensor weight, Tensor hessian, GptqFormat format, double percDamp, int blockSize,
        string? name, bool? columnsOnHost)
    {
        QuantInputChecks.RequireFloat(weight, name);
        if (weight.dim() != 2) throw new ArgumentException($"GPTQ needs a 2-D [out, in] weight, got [{string.Join(", ", weight.shape)}]");
        long rows = weight.shape[0], columns = weight.shape[1];
        if (hessian.dim() != 2 || hessian.shape[0] != columns || hessian.shape[1] != columns)
            throw new ArgumentException($"GPTQ Hessian for {name ?? "the weight"} is [{string.Join(", ", hessian.shape)}], expected [{columns}, {columns}]");
        int groups = format.Groups(columns, name);
        long group = format.GroupSize == 0 ? columns : format.GroupSize;
        if (percDamp <= 0 || percDamp >= 1) throw new ArgumentException($"GPTQ damping {percDamp} must be in (0, 1)");

        using var scope = NewDisposeScope();
        var dtype = weight.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var W = weight.detach().to(dtype, copy: true);                                   // (out, in)
        var H = hessian.detach().to(dtype, copy: true);                                  // (in, in)
        QuantInputChecks.RequireFinite(W.abs().amax([1]), name);

        var (scale, zero) = Grid(W, format.MaxQ);                                        // per channel: from the original W
        var diagonal = H.diagonal();
        var dead = diagonal.eq(0);
        diagonal.masked_fill_(dead, 1);
        W.masked_fill_(dead.unsqueeze(0), 0);

        Tensor? perm = null;
        if (format.ActOrder)
        {
            perm = DescendingStableOrder(H.diagonal(), W.device);
            W = W.index_select(1, perm);
            H = H.index_select(0, perm).index_select(1, perm);
        }

        double damp = percDamp * H.diagonal().mean().to(ScalarType.Float64).item<double>();
        H.diagonal().add_(damp);
        var U = Cholesky(cholesky_inverse(Cholesky(H, name)), name).t().contiguous();  // upper: H^-1 = U^T U
        H.Dispose();

        var codes = zeros(rows, columns, ScalarType.Int64, W.device);
        var scales = new List<Tensor>();
        var zeroPoints = new List<Tensor>();
        bool onHost = columnsOnHost ?? W.device.type == DeviceType.CPU;
        for (long i1 = 0; i1 < columns; i1 += blockSize)
        {
            long i2 = Math.Min(i1 + blockSize, columns), count = i2 - i1;
            using var blockScope = NewDisposeScope();
            // The grid of each column of the block. A group's grid is found when its first column is reached, from W
            // as this block began (W changes only between blocks), so the grids of the groups that start in the block
            // can all be found before its columns are quantized.
            var grids = new (Tensor Scale, Tensor Zero)[count];
            for (long i = 0; i < count; i++)
            {
                long column = i1 + i;
                if (format.GroupSize > 0 && column % group == 0)
                {
                    (scale, zero) = Grid(W.narrow(1, column, group), format.MaxQ);
                    scale.MoveToOuterDisposeScope();
                    zero.MoveToOuterDisposeScope();
                    scales.Add(scale);
                    zeroPoints.Add(zero);
                }
                grids[i] = (scale, zero);
            }
            var W1 = W.narrow(1, i1, count);                                              // (out, count)
            var U1 = U.narrow(0, i1, count).narrow(1, i1, count);                         // (count, count)
            var codes1 = codes.narrow(1, i1, count);
            var Err1 = !onHost ? QuantizeBlockWithTorchOps(W1, U1, grids, codes1, format.MaxQ)
                : dtype == ScalarType.Float64 ? QuantizeBlockOnHost<double>(W1, U1, grids, codes1, format.MaxQ)
                : QuantizeBlockOnHost<float>(W1, U1, grids, codes1, format.MaxQ);
            if (i2 < columns)
                W.narrow(1, i2, columns - i2).sub_(Err1.matmul(U.narrow(0, i1, count).narrow(1, i2, columns - i2)));
        }

        var gIdx = arange(columns, ScalarType.Int64, W.device).div(group, rounding_mode: RoundingMode.floor);
        if (perm is not null)
        {
            var inverse = argsort(perm);
            codes = codes.index_select(1, inverse);
            gIdx = gIdx.index_select(0, inverse);
        }
        var scaleTable = format.GroupSize > 0 ? cat(scales, 1) : scale;                   // (out, groups)
        var zeroTable = format.GroupSize > 0 ? cat(zeroPoints, 1) : zero;
        if (scaleTable.shape[1] != groups) throw new InvalidOperationException($"GPTQ made {scaleTable.shape[1]} groups, expected {groups}");
        return new GptqSolution(codes.MoveToOuterDisposeScope(), scaleTable.MoveToOuterDisposeScope(),
            zeroTable.MoveToOuterDisposeScope(), gIdx.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The column steps of one lazy block in torch ops on the weight's device (eight small kernels a column, none
    /// waiting for the host): column i is rounded to its grid, err = (w_i - Q(w_i)) / U_ii, and err · U[i, i+1:] is
    /// subtracted from the block's later columns. Writes the block's codes; returns the errors (out, count).
    /// On a GPU this loop is bound by the launches (one per op, ~5-10 us each from TorchSharp, against 2-3 us of work),
    /// so it does no more ops than the arithmetic needs, in the same IEEE operations as <see cref="QuantizeBlockOnHost{T}"/>:
    /// <list type="bullet">
    /// <item>the block is held transposed (count, out): column i is a contiguous row, and the rows after it are one
    /// contiguous slice for the rank-one update;</item>
    /// <item>it keeps c = clamp(round(w / scale), -zero, maxq - zero), the code minus the zero point: with integer zero
    /// points this equals clamp(round(w / scale) + zero, 0, maxq) - zero exactly (integers below 2^24 add exactly in
    /// fp32; a value too large for that clamps to the same bound either way), so the dequantized value scale · c and
    /// the codes c + zero (added once per block) are those of the per-column formula, with two ops fewer a column;</item>
    /// <item>the update is the elementwise product err ⊗ U[i, i+1:] then a subtraction (each product rounded, then
    /// subtracted, as the host loop does). Not addr_/addcmul_: their CUDA kernels compute self + alpha·a·b, which
    /// the compiler contracts to one fused multiply-add (one rounding instead of two), so they would change the bits;</item>
    /// <item>the codes and errors of the block's columns are stacked once per block, not copied column by column, and
    /// the column and pivot views are made by one unbind each.</item>
    /// </list>
    /// </summary>
    /// <param name="W1">the block's columns of W (out, count), not modified.</param>
    /// <param name="U1">the block's diagonal block of U (count, count).</param>
    /// <param name="grids">the grid (scale, zero), each (out, 1), of each column of the block; zero points are integers.</param>
    /// <param name="codes1">the block's columns of the codes (out, count) int64, written.</param>
    internal static Tensor QuantizeBlockWithTorchOps(Tensor W1, Tensor U1, (Tensor Scale, Tensor Zero)[] grids, Tensor codes1, int maxQ)
    {
        int count = (int)W1.shape[1];
        using var scope = NewDisposeScope();
        var Wt = W1.t().contiguous();                                                     // (count, out)
        // Views made by one call each rather than one or two per column: column i as a (1, out) row, U_ii, and
        // U[i, :] as a (count, 1) column for the products err ⊗ U[i, i+1:].
        var columns = Wt.unsqueeze(1).unbind(0);
        var pivots = U1.diagonal().unbind(0);
        var factorColumns = U1.unsqueeze(2).unbind(0);
        var shifted = new Tensor[count];                                                  // code - zero of each column, (1, out)
        var errors = new Tensor[count];
        Tensor? current = null;
        Tensor scale = null!, low = null!, high = null!;
        for (int i = 0; i < count; i++)
        {
            if (!ReferenceEquals(grids[i].Scale, current))
            {
                current = grids[i].Scale;
                scale = grids[i].Scale.reshape(1, -1);                                    // (1, out)
                low = grids[i].Zero.reshape(1, -1).neg();
                high = low + maxQ;
            }
            var w = columns[i];                                                           // (1, out), final: only later rows change
            var c = w.div(scale).round_().clamp_(low, high);                              // round: half to even
            var err = w.sub(c.mul(scale)).div_(pivots[i]);
            if (i + 1 < count)
            {
                int rest = count - i - 1;
                using var products = factorColumns[i].narrow(0, i + 1, rest).mul(err);    // (rest, out): U_ij · err
                Wt.narrow(0, i + 1, rest).sub_(products);
            }
            shifted[i] = c;
            errors[i] = err;
        }
        var codes = cat(shifted, 0).t();                                                  // (out, count)
        for (int a = 0, b; a < count; a = b)                                              // + zero, per run of columns of one grid
        {
            for (b = a + 1; b < count && ReferenceEquals(grids[b].Zero, grids[a].Zero); b++) { }
            codes.narrow(1, a, b - a).add_(grids[a].Zero);
        }
        codes1.copy_(codes);
        return cat(errors, 0).t().contiguous().MoveToOuterDisposeScope();                 // (out, count)
    }

    /// <summary>
    /// The same column steps as <see cref="QuantizeBlockWithTorchOps"/> in a host loop over a copy of the block: on the
    /// CPU, a few torch ops per column cost more than their arithmetic (each op's dispatch, and a thread hand-off for
    /// every op large enough to run in parallel, which stalls whenever the machine's cores are busy), while the
    /// loop needs two copies per block. Bit for bit the same: each step is the same IEEE operation, in the same
    /// dtype, on the same operands as the torch op it replaces (division, round half to even, clamp, and for the
    /// rank-one update the product err·U_ij rounded and then subtracted, as the elementwise product and sub_ do; C#
    /// never fuses a multiply and an add, Vector&lt;T&gt; arithmetic included: only an explicit FusedMultiplyAdd does).
    /// The rows of W never meet in these steps (only U, shared, couples the columns), so each row runs all the block's
    /// columns in turn, rows spread over libtorch's thread count, and a row's update of its later columns is a
    /// vector loop: the order in which rows run changes no operation on any element. A block on a GPU is copied to the
    /// host and its codes and errors back (bench quantize --gptq-columns host times that against the torch ops).
    /// </summary>
    internal static Tensor QuantizeBlockOnHost<T>(Tensor W1, Tensor U1, (Tensor Scale, Tensor Zero)[] grids, Tensor codes1, int maxQ)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int rows = (int)W1.shape[0], count = (int)W1.shape[1];
        var w = W1.cpu().contiguous().data<T>().ToArray();                                // (out, count) row-major
        var u = U1.cpu().contiguous().data<T>().ToArray();                                // (count, count) row-major
        var err = new T[rows * count];
        var q = new byte[rows * count];                                                   // codes <= maxq <= 255: an eighth of int64's transfer
        T top = T.CreateChecked(maxQ);
        var scales = new T[count][];                                                      // the grid of each column, (out)
        var zeros = new T[count][];
        Tensor? current = null;
        for (int i = 0; i < count; i++)
        {
            if (!ReferenceEquals(grids[i].Scale, current))
            {
                current = grids[i].Scale;
                scales[i] = grids[i].Scale.cpu().contiguous().data<T>().ToArray();
                zeros[i] = grids[i].Zero.cpu().contiguous().data<T>().ToArray();
            }
            else (scales[i], zeros[i]) = (scales[i - 1], zeros[i - 1]);
        }
        void Row(int r)
        {
            var wRow = w.AsSpan(r * count, count);
            for (int i = 0; i < count; i++)
            {
                T x = wRow[i], scale = scales[i][r], zero = zeros[i][r];
                T code = T.Clamp(T.Round(x / scale) + zero, T.Zero, top);                  // T.Round: half to even, as torch.round
                q[r * count + i] = byte.CreateTruncating(code);
                T e = (x - scale * (code - zero)) / u[i * count + i];
                err[r * count + i] = e;
                SubtractProducts(wRow[(i + 1)..], e, u.AsSpan(i * count + i + 1, count - i - 1));
            }
        }
        int threads = Math.Max(1, Math.Min(get_num_threads(), rows / RowsPerTask));
        if (threads == 1) for (int r = 0; r < rows; r++) Row(r);
        else Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
        {
            for (int r = (int)((long)rows * t / threads), end = (int)((long)rows * (t + 1) / threads); r < end; r++) Row(r);
        });
        using (var codes = tensor(q, [rows, count], ScalarType.Byte))
        using (var onDevice = codes.to(codes1.device))
            codes1.copy_(onDevice);
        return err switch
        {
            float[] f => tensor(f, [rows, count], ScalarType.Float32, W1.device),
            double[] d => tensor(d, [rows, count], ScalarType.Float64, W1.device),
            _ => throw new NotSupportedException($"GPTQ solves in fp32 or fp64, not {typeof(T).Name}"),
        };
    }

    /// <summary>Fewest rows worth a thread of their own in <see cref="QuantizeBlockOnHost{T}"/> (a row of a block of
    /// 128 columns is ~8k multiply-subtracts, a few microseconds; a task's start costs about as much as a few rows).</summary>
    const int RowsPerTask = 64;

    /// <summary>target[j] -= e · factors[j], each product rounded and then subtracted (no fused multiply-add).</summary>
    static void SubtractProducts<T>(Span<T> target, T e, ReadOnlySpan<T> factors) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int j = 0;
        if (Vector.IsHardwareAccelerated && Vector<T>.IsSupported)
        {
            var ve = new Vector<T>(e);
            for (; j <= target.Length - Vector<T>.Count; j += Vector<T>.Count)
                (new Vector<T>(target[j..]) - ve * new Vector<T>(factors[j..])).CopyTo(target[j..]);
        }
        for (; j < target.Length; j++) target[j] -= e * factors[j];
    }

    /// <summary>Solves and packs: the stored weight GPTQ makes of <paramref name="weight"/>.</summary>
    public static GptqWeight Quantize(Tensor weight, Tensor hessian, GptqFormat format, double percDamp = DefaultPercDamp,
        int blockSize = DefaultBlockSize, string? name = null)
    {
        using var solution = Solve(weight, hessian, format, percDamp, blockSize, name);
        return GptqWeight.FromCodes(format, solution.Codes, solution.Scales, solution.Zeros, solution.GIdx, weight.dtype);
    }

    /// <summary>AutoGPTQ's symmetric Quantizer.find_params per row of x (out, k): scale and zero, each (out, 1).</summary>
    internal static (Tensor Scale, Tensor Zero) Grid(Tensor x, int maxQ)
    {
        using var scope = NewDisposeScope();
        var xmin = x.amin([1]).clamp_max(0);
        var xmax = x.amax([1]).clamp_min(0);
        xmax = maximum(xmin.abs(), xmax);
        xmin = where(xmin.lt(0), -xmax, xmin);
        var empty = xmin.eq(0).logical_and(xmax.eq(0));
        xmin = where(empty, full_like(xmin, -1), xmin);
        xmax = where(empty, full_like(xmax, 1), xmax);
        var scale = (xmax - xmin) / maxQ;
        var zero = full_like(scale, (maxQ + 1) / 2);
        return (scale.unsqueeze(1).MoveToOuterDisposeScope(), zero.unsqueeze(1).MoveToOuterDisposeScope());
    }

    /// <summary>Column order by decreasing Hessian diagonal, ties in index order.</summary>
    internal static Tensor DescendingStableOrder(Tensor diagonal, Device device)
    {
        var d = diagonal.to(ScalarType.Float64).cpu().data<double>().ToArray();
        var order = Enumerable.Range(0, d.Length).OrderByDescending(i => d[i]).ThenBy(i => i).Select(i => (long)i).ToArray();
        return tensor(order, ScalarType.Int64, device);
    }

    static Tensor Cholesky(Tensor h, string? name)
    {
        var (factor, info) = linalg.cholesky_ex(h);
        using (info)
            if (info.item<int>() != 0)
                throw new ArgumentException($"GPTQ: the damped Hessian of {name ?? "the weight"} is not positive definite (calibration inputs too few or degenerate); add calibration samples or raise the damping");
        return factor;
    }
}
