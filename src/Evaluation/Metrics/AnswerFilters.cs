using System.Text.RegularExpressions;
using QLoraNet.Evaluation.Config;

namespace QLoraNet.Evaluation.Metrics;

/// <summary>
/// The harness's filters on generations (lm_eval/filters): <c>regex</c> takes Python's <c>findall</c> of the pattern,
/// picks match <c>group_select</c> (negative counts from the end), and when the pattern has several groups the first
/// non-empty one; the result is stripped; no match gives the fallback ("[invalid]"). <c>take_first</c> keeps the first
/// of the (one, here) responses, so it changes nothing with one greedy generation.
/// </summary>
public static class AnswerFilters
{
    /// <summary>The pipeline when a task names none: the harness's "none" filter (take_first).</summary>
    public static readonly FilterPipeline None = new("none", [new FilterStep("take_first")]);

    public static string Apply(FilterPipeline pipeline, string response)
    {
        foreach (var step in pipeline.Steps)
            if (step.Function == "regex") response = RegexExtract(step, response);
        return response;
    }

    static string RegexExtract(FilterStep step, string response)
    {
        var regex = TaskRegex.Parse(step.RegexPattern!, "filter 'regex_pattern'");
        var matches = TaskRegex.Matches(regex, response);
        if (matches.Count == 0) return step.Fallback;
        int index = step.GroupSelect < 0 ? matches.Count + step.GroupSelect : step.GroupSelect;
        if (index < 0 || index >= matches.Count) return step.Fallback; // Python would raise IndexError; a miss is fairer
        var m = matches[index];
        int groups = regex.GetGroupNumbers().Length - 1;
        string found = groups switch
        {
            0 => m.Value,
            1 => m.Groups[1].Value,
            // findall gives a tuple of all groups; the harness keeps the first non-empty one.
            _ => Enumerable.Range(1, groups).Select(g => m.Groups[g].Value).FirstOrDefault(v => v.Length > 0) ?? step.Fallback,
        };
        return found.Trim();
    }
}
