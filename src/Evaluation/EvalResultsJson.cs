using System.Text.Json;
using System.Text.Json.Nodes;
using QLoraNet.Evaluation.Metrics;

namespace QLoraNet.Evaluation;

/// <summary>
/// The results file, laid out as lm-evaluation-harness's results JSON so its readers find their way:
/// <c>results</c> (per task: "alias", "acc,none", "acc_stderr,none", ...), <c>groups</c> (the same per group),
/// <c>group_subtasks</c>, <c>n-shot</c>, <c>n-samples</c>, plus <c>average</c> and the run's <c>config</c>. Written to
/// a temporary file and renamed.
/// </summary>
public static class EvalResultsJson
{
    /// <param name="logSamples">add <c>samples</c>: per task, every row's origin, target, log-likelihoods or generation
    /// and metric values (the harness's --log_samples, inline)</param>
    public static JsonObject ToJson(EvalResults r, IReadOnlyDictionary<string, object?> config, bool logSamples = false)
    {
        var results = new JsonObject();
        foreach (var t in r.Tasks) results[t.Name] = Entry(t.Alias ?? t.Name, t.Metrics);
        var groups = new JsonObject();
        foreach (var g in r.Groups) groups[g.Name] = Entry(g.Alias ?? g.Name, g.Metrics);
        var avg = r.Average();
        var json = new JsonObject
        {
            ["results"] = results,
            ["groups"] = groups,
            ["group_subtasks"] = new JsonObject(r.Groups.Select(g => KeyValuePair.Create(g.Name, (JsonNode?)new JsonArray(g.Tasks.Select(t => (JsonNode?)t).ToArray())))),
            ["n-shot"] = new JsonObject(r.Tasks.Select(t => KeyValuePair.Create(t.Name, (JsonNode?)t.NumFewshot))),
            ["n-samples"] = new JsonObject(r.Tasks.Select(t => KeyValuePair.Create(t.Name, (JsonNode?)new JsonObject { ["effective"] = t.Samples }))),
            ["task_files"] = new JsonObject(r.Tasks.Select(t => KeyValuePair.Create(t.Name, (JsonNode?)t.Source))),
            ["average"] = new JsonObject
            {
                ["entries"] = new JsonArray(r.Headlines().Select(h => (JsonNode?)new JsonObject
                    { ["name"] = h.Name, ["metric"] = h.Metric, ["value"] = Num(h.Score.Value), ["stderr"] = Num(h.Score.Stderr) }).ToArray()),
                ["value"] = Num(avg.Value),
                ["stderr"] = Num(avg.Stderr),
            },
            ["config"] = JsonSerializer.SerializeToNode(config),
        };
        if (logSamples)
            json["samples"] = new JsonObject(r.Tasks.Select(t => KeyValuePair.Create(t.Name, (JsonNode?)new JsonArray(
                (t.Rows ?? []).Select(row => (JsonNode?)new JsonObject
                {
                    ["doc_id"] = row.DocId, ["origin"] = row.Origin, ["target"] = JsonSerializer.SerializeToNode(row.Target),
                    ["loglikelihoods"] = row.LogLikelihoods is null ? null : new JsonArray(row.LogLikelihoods.Select(v => Num(v)).ToArray()),
                    ["generation"] = row.Generation,
                    ["metrics"] = new JsonObject(row.Metrics.Select(kv => KeyValuePair.Create(kv.Key, Num(kv.Value)))),
                }).ToArray()))));
        return json;
    }

    public static void Write(string path, JsonObject json)
    {
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir != null) Directory.CreateDirectory(dir);
        string tmp = path + ".tmp";
        File.WriteAllText(tmp, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        File.Move(tmp, path, overwrite: true);
    }

    static JsonObject Entry(string alias, IReadOnlyDictionary<string, Score> metrics)
    {
        var o = new JsonObject { ["alias"] = alias };
        foreach (var (key, score) in metrics)
        {
            int comma = key.IndexOf(',');
            o[key] = Num(score.Value);
            o[$"{key[..comma]}_stderr{key[comma..]}"] = score.Stderr is { } se ? Num(se) : "N/A";
        }
        o["samples"] = metrics.Values.FirstOrDefault().Count;
        return o;
    }

    static JsonNode? Num(double? v) => v is { } d && double.IsFinite(d) ? JsonValue.Create(d) : null;
}
