using System.Text;

namespace QLoraNet.Evaluation.Metrics;

/// <summary>
/// The multiple-choice metrics of lm-evaluation-harness (ConfigurableTask.process_results): the prediction is the
/// choice with the highest log-likelihood (the first on ties, as numpy's argmax), and
/// <list type="bullet">
/// <item><c>acc</c>: the prediction is the gold choice;</item>
/// <item><c>acc_norm</c>: the same after dividing each log-likelihood by its choice's length in characters (Python's
/// len of the choice text, without the target delimiter: code points, so equal to the UTF-8 byte count for ASCII);</item>
/// <item><c>acc_bytes</c>: divided by the choice's UTF-8 byte length instead;</item>
/// <item><c>exact_match</c>: the gold continuation is the greedy one.</item>
/// </list>
/// </summary>
public static class ChoiceMetrics
{
    public static int ArgMax(IReadOnlyList<double> values)
    {
        int best = 0;
        for (int i = 1; i < values.Count; i++)
            if (values[i] > values[best] || (double.IsNaN(values[best]) && !double.IsNaN(values[i]))) best = i;
        return best;
    }

    public static double Acc(IReadOnlyList<double> lls, int gold) => ArgMax(lls) == gold ? 1 : 0;

    public static double AccNorm(IReadOnlyList<double> lls, IReadOnlyList<string> choices, int gold) =>
        ArgMax(lls.Select((ll, i) => ll / CodePoints(choices[i])).ToList()) == gold ? 1 : 0;

    public static double AccBytes(IReadOnlyList<double> lls, IReadOnlyList<string> choices, int gold) =>
        ArgMax(lls.Select((ll, i) => ll / Encoding.UTF8.GetByteCount(choices[i])).ToList()) == gold ? 1 : 0;

    /// <summary>Python's len(str): Unicode code points (a surrogate pair counts once).</summary>
    public static int CodePoints(string s) => s.EnumerateRunes().Count();
}
