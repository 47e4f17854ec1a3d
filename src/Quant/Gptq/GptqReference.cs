namespace QLoraNet.Quant.Gptq;

/// <summary>
/// The slow, obviously-correct GPTQ, written from the paper rather than from the fast path: Optimal Brain Surgeon's
/// greedy update (Frantar et al. 2022, eq. 2 and 3) applied column by column in a fixed order (section 3 step 1),
/// with the inverse Hessian of the remaining columns kept explicitly and updated by one step of Gaussian elimination
/// after each column (eq. 3: H^-1 ← H^-1 - H^-1[:, q] H^-1[q, :] / [H^-1]_qq), in double precision, no Cholesky
/// factor, no blocks. For column q: δ = (w_q - Q(w_q)) / [H^-1]_qq, then w_j -= δ · [H^-1]_qj for every later j.
/// Grids, damping, dead inputs and act-order are AutoGPTQ's (see <see cref="GptqSolver"/>); a group's grid is read
/// from the weights as they stood when the current <paramref name="blockSize"/>-column block began, the one
/// implementation detail of AutoGPTQ the paper does not fix. Tests hold <see cref="GptqSolver"/> to this.
/// Also the plain dequantization of the stored tensors, bit by bit from the packed words.
/// </summary>
public static class GptqReference
{
    /// <summary>Codes (out·in, row-major), scales and zeros (out·groups, row-major) and g_idx (in).</summary>
    public sealed record Result(long[] Codes, double[] Scales, double[] Zeros, long[] GIdx);

    public static Result Quantize(double[] weight, int rows, int columns, double[] hessian, GptqFormat format,
        double percDamp = GptqSolver.DefaultPercDamp, int blockSize = GptqSolver.DefaultBlockSize)
    {
        int group = format.GroupSize == 0 ? columns : format.GroupSize;
        int groups = format.Groups(columns);
        int maxQ = format.MaxQ;
        var W = new double[rows, columns];
        var H = new double[columns, columns];
        for (int r = 0; r < rows; r++) for (int c = 0; c < columns; c++) W[r, c] = weight[r * columns + c];
        for (int i = 0; i < columns; i++) for (int j = 0; j < columns; j++) H[i, j] = hessian[i * columns + j];

        var (scale, zero) = Grid(W, 0, columns, maxQ);                     // per channel: from the original weight
        for (int j = 0; j < columns; j++)
            if (H[j, j] == 0)
            {
                H[j, j] = 1;
                for (int r = 0; r < rows; r++) W[r, j] = 0;
            }

        // Column order: as given, or by decreasing H_jj (act-order), ties by index.
        var order = Enumerable.Range(0, columns).ToArray();
        if (format.ActOrder) order = order.OrderByDescending(j => H[j, j]).ThenBy(j => j).ToArray();
        var Wp = new double[rows, columns];
        var Hp = new double[columns, columns];
        for (int r = 0; r < rows; r++) for (int p = 0; p < columns; p++) Wp[r, p] = W[r, order[p]];
        for (int p = 0; p < columns; p++) for (int q = 0; q < columns; q++) Hp[p, q] = H[order[p], order[q]];

        double mean = 0;
        for (int p = 0; p < columns; p++) mean += Hp[p, p];
        double damp = percDamp * mean / columns;
        for (int p = 0; p < columns; p++) Hp[p, p] += damp;
        var Hinv = Inverse(Hp);

        var codes = new long[rows * columns];
        var scales = new double[rows * groups];
        var zeros = new double[rows * groups];
        var gIdx = new long[columns];
        var snapshot = (double[,])Wp.Clone();                              // the weights when the current block began
        for (int p = 0; p < columns; p++)
        {
            if (p % blockSize == 0) snapshot = (double[,])Wp.Clone();
            if (format.GroupSize > 0 && p % group == 0)
            {
                (scale, zero) = Grid(snapshot, p, p + group, maxQ);
                for (int r = 0; r < rows; r++)
                {
                    scales[r * groups + p / group] = scale[r];
                    zeros[r * groups + p / group] = zero[r];
                }
            }
            for (int r = 0; r < rows; r++)
            {
                double q = Math.Clamp(Math.Round(Wp[r, p] / scale[r]) + zero[r], 0, maxQ);   // Math.Round: half to even, as torch.round
                codes[r * columns + order[p]] = (long)q;
                double delta = (Wp[r, p] - scale[r] * (q - zero[r])) / Hinv[p, p];
                for (int j = p + 1; j < columns; j++) Wp[r, j] -= delta * Hinv[p, j];
            }
            // Remove column p from the inverse Hessian of the remaining columns.
            double pivot = Hinv[p, p];
            var rowP = new double[columns];
            var colP = new double[columns];
            for (int j = 0; j < columns; j++) (rowP[j], colP[j]) = (Hinv[p, j], Hinv[j, p]);
            for (int i = 0; i < columns; i++)
                for (int j = 0; j < columns; j++)
                    Hinv[i, j] -= colP[i] * rowP[j] / pivot;
            gIdx[order[p]] = p / group;
        }
        if (format.GroupSize == 0)
            for (int r = 0; r < rows; r++) (scales[r], zeros[r]) = (scale[r], zero[r]);
        return new Result(codes, scales, zeros, gIdx);
    }

    /// <summary>AutoGPTQ's symmetric grid for columns [from, to) of each row.</summary>
    static (double[] Scale, double[] Zero) Grid(double[,] W, int from, int to, int maxQ)
    {
        int rows = W.GetLength(0);
        var scale = new double[rows];
        var zero = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double xmin = 0, xmax = 0;
            for (int c = from; c < to; c++) (xmin, xmax) = (Math.Min(xmin, W[r, c]), Math.Max(xmax, W[r, c]));
            xmax = Math.Max(Math.Abs(xmin), xmax);
            if (xmin < 0) xmin = -xmax;
            if (xmin == 0 && xmax == 0) (xmin, xmax) = (-1, 1);
            scale[r] = (xmax - xmin) / maxQ;
            zero[r] = (maxQ + 1) / 2;
        }
        return (scale, zero);
    }

    /// <summary>Gauss-Jordan inverse with partial pivoting.</summary>
    static double[,] Inverse(double[,] a)
    {
        int n = a.GetLength(0);
        var m = (double[,])a.Clone();
        var inv = new double[n, n];
        for (int i = 0; i < n; i++) inv[i, i] = 1;
        for (int c = 0; c < n; c++)
        {
            int pivot = c;
            for (int r = c + 1; r < n; r++) if (Math.Abs(m[r, c]) > Math.Abs(m[pivot, c])) pivot = r;
            for (int j = 0; j < n; j++)
            {
                (m[c, j], m[pivot, j]) = (m[pivot, j], m[c, j]);
                (inv[c, j], inv[pivot, j]) = (inv[pivot, j], inv[c, j]);
            }
            double d = m[c, c];
            for (int j = 0; j < n; j++) { m[c, j] /= d; inv[c, j] /= d; }
            for (int r = 0; r < n; r++)
            {
                if (r == c || m[r, c] == 0) continue;
                double f = m[r, c];
                for (int j = 0; j < n; j++) { m[r, j] -= f * m[c, j]; inv[r, j] -= f * inv[c, j]; }
            }
        }
        return inv;
    }

    /// <summary>The dense weight (out·in, row-major, fp32) from the stored tensors, unpacking each code bit by bit.</summary>
    public static float[] Dequantize(GptqWeight w)
    {
        int bits = w.Spec.Bits, rows = (int)w.OutFeatures, columns = (int)w.InFeatures;
        var qweight = w.QWeight.cpu().contiguous().data<int>().ToArray();
        var qzeros = w.QZeros.cpu().contiguous().data<int>().ToArray();
        var scales = w.Scales.cpu().to(TorchSharp.torch.ScalarType.Float32).contiguous().data<float>().ToArray();
        var gIdx = w.GIdx.cpu().contiguous().data<int>().ToArray();
        int qweightColumns = rows, qzeroWords = (int)w.QZeros.shape[1];
        var dense = new float[rows * columns];
        for (int o = 0; o < rows; o++)
            for (int i = 0; i < columns; i++)
            {
                int g = gIdx[i];
                long q = Bits(k => qweight[k * qweightColumns + o], i, bits);
                long z = Bits(k => qzeros[g * qzeroWords + k], o, bits) + w.ZeroOffset;
                dense[o * columns + i] = scales[g * rows + o] * (q - z);
            }
        return dense;
    }

    /// <summary>Code <paramref name="index"/> of a little-endian bit stream whose word k is <paramref name="word"/>(k).</summary>
    static long Bits(Func<int, int> word, int index, int bits)
    {
        long value = 0;
        for (int b = 0; b < bits; b++)
        {
            long bit = (long)index * bits + b;
            if (((uint)word((int)(bit / 32)) >> (int)(bit % 32) & 1) != 0) value |= 1L << b;
        }
        return value;
    }
}
