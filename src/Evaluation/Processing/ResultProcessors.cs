namespace QLoraNet.Evaluation.Processing;

/// <summary>
/// Named stand-ins for the harness's <c>process_results: !function ...</c> hooks of multiple-choice tasks: from a
/// row and its choices' log-likelihoods, the row's metric values.
/// <list type="bullet">
/// <item><c>mc2</c> (lm_eval/tasks/truthfulqa/utils.py process_results_mc2): the normalized probability mass of the
/// true answers, sum over labels == 1 of exp(ll_i) / sum_j exp(ll_j), reported as "acc". Computed as a softmax with the
/// maximum subtracted: the same number, without the 0/0 the plain exp gives when every ll is below -745.</item>
/// </list>
/// </summary>
public static class ResultProcessors
{
    public static readonly string[] Names = ["mc2"];

    public static IReadOnlyDictionary<string, double> Apply(string name, Doc doc, IReadOnlyList<double> logLikelihoods) => name switch
    {
        "mc2" => new Dictionary<string, double> { ["acc"] = Mc2(doc, logLikelihoods) },
        _ => throw new ArgumentException($"unknown result processor '{name}'"),
    };

    static double Mc2(Doc doc, IReadOnlyList<double> lls)
    {
        var labels = (doc.Fields.GetValueOrDefault("mc2_targets") as IReadOnlyDictionary<string, object?>)?.GetValueOrDefault("labels") as IReadOnlyList<object?>
            ?? throw new TaskException($"row {doc.Origin}: process_results mc2 needs field 'mc2_targets' with a 'labels' list (TruthfulQA's multiple_choice layout)");
        if (labels.Count != lls.Count)
            throw new TaskException($"row {doc.Origin}: mc2_targets.labels has {labels.Count} entries but there are {lls.Count} choices");
        double max = lls.Max();
        double total = lls.Sum(l => Math.Exp(l - max));
        double trueMass = lls.Where((l, i) => PythonValues.PyEquals(labels[i], 1L)).Sum(l => Math.Exp(l - max));
        return trueMass / total;
    }
}
