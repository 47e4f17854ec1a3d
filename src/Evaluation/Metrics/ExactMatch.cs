using System.Text.RegularExpressions;
using QLoraNet.Evaluation.Config;

namespace QLoraNet.Evaluation.Metrics;

/// <summary>
/// The harness's <c>exact_match</c> (Hugging Face evaluate's): both strings first lose every match of each
/// <c>regexes_to_ignore</c> pattern in turn (GSM8K drops ",", "$", everything through "#### ", and a final "."), then
/// are lower-cased with <c>ignore_case</c> and stripped of ASCII punctuation with <c>ignore_punctuation</c>; the score
/// is 1 when they are equal.
/// </summary>
public static class ExactMatch
{
    const string Punctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

    public static double Score(MetricSpec spec, string prediction, string reference) =>
        Normalize(spec, prediction) == Normalize(spec, reference) ? 1 : 0;

    static string Normalize(MetricSpec spec, string s)
    {
        foreach (string pattern in spec.RegexesToIgnore ?? []) s = TaskRegex.Replace(pattern, s, "", "'regexes_to_ignore'");
        if (spec.IgnoreCase) s = s.ToLowerInvariant();
        if (spec.IgnorePunctuation) s = new string(s.Where(c => !Punctuation.Contains(c)).ToArray());
        return s;
    }
}
