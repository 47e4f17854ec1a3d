using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using QLoraNet.Formats;

namespace QLoraNet.Cli;

/// <summary>
/// `inspect`: parameter counts, the size of the model in each storage format and a QLoRA training-memory estimate,
/// computed from config.json alone (no weight is read, so it works on a config of a model not downloaded).
/// </summary>
public static class InspectCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "model directory (or its config.json); only config.json is read", Required = true };
        var seq = new Option<int>("--seq") { Description = "sequence length for the training-memory estimate", DefaultValueFactory = _ => 512 };
        var batch = new Option<int>("--batch") { Description = "micro-batch size for the training-memory estimate", DefaultValueFactory = _ => 4 };
        var rank = new Option<int>("--lora-r") { Description = "LoRA rank (on q, k, v, o) for the training-memory estimate", DefaultValueFactory = _ => 16 };
        var json = new Option<bool>("--json") { Description = "print one JSON object instead of tables" };
        var cmd = new Command("inspect", "parameter counts, size per format and QLoRA memory estimate from config.json");
        foreach (var o in new Option[] { model, seq, batch, rank, json }) cmd.Options.Add(o);
        cmd.SetAction(parsed =>
        {
            string path = parsed.GetValue(model)!;
            if (!Directory.Exists(path) && !File.Exists(path)) throw new DirectoryNotFoundException($"--model '{path}' does not exist");
            var config = ModelFamilies.Load(path);
            var counts = ModelFootprint.Count(config);
            var sizes = ModelFootprint.Table(config);
            var estimate = TrainingMemoryEstimate.Compute(config, parsed.GetValue(seq), parsed.GetValue(batch), parsed.GetValue(rank));
            stdout.Write(parsed.GetValue(json)
                ? Json(config, counts, sizes, estimate, parsed.GetValue(seq), parsed.GetValue(batch), parsed.GetValue(rank))
                : Text(path, config, counts, sizes, estimate, parsed.GetValue(seq), parsed.GetValue(batch), parsed.GetValue(rank)));
            return 0;
        });
        return cmd;
    }

    static string Text(string path, ModelArchitecture c, ParameterCounts n, IReadOnlyList<FootprintRow> sizes, TrainingMemoryEstimate e, int seq, int batch, int rank)
    {
        var w = new StringWriter { NewLine = "\n" };
        w.WriteLine($"{path}: {c.NumLayers} layers, hidden {c.Hidden}, intermediate {c.Intermediate}, heads {c.NumHeads} (kv {c.NumKvHeads}, head_dim {c.HeadDim}), vocab {c.VocabSize}, tied head {(c.TiedHead ? "yes" : "no")}, family {c.Family}");
        w.WriteLine();
        w.WriteLine("parameters");
        w.WriteLine($"  embeddings            {N(n.Embeddings),16}");
        w.WriteLine($"  linears per layer     {N(n.LinearsPerLayer),16}   ({string.Join(", ", c.LayerLinears.Select(l => $"{l.Name} {l.OutFeatures}x{l.InFeatures}"))})");
        w.WriteLine($"  linears (all layers)  {N(n.Linears),16}");
        w.WriteLine($"  norms                 {N(n.Norms),16}");
        w.WriteLine($"  head                  {N(n.Head),16}{(c.TiedHead ? "   (tied to the embedding)" : "")}");
        w.WriteLine($"  total                 {N(n.Total),16}");
        w.WriteLine();
        w.WriteLine("size in GB (1e9 bytes); int8/nf4 rows: decoder linears quantized, embeddings, norms and head bf16");
        w.WriteLine($"  {"format",-8} {"linears",10} {"embed+head",11} {"norms",9} {"total",10}");
        foreach (var r in sizes)
            w.WriteLine($"  {r.Format,-8} {Gb(r.Linears),10} {Gb(r.EmbeddingsAndHead),11} {Gb(r.Norms),9} {Gb(r.Total),10}");
        w.WriteLine();
        w.WriteLine($"QLoRA training memory, rough estimate (nf4-dq base, bf16 compute, LoRA r={rank} on q,k,v,o, AdamW, seq {seq} x batch {batch}, per-layer checkpointing; formula in docs/QUANTIZATION.md)");
        w.WriteLine($"  base weights                 {Gb(e.BaseWeights),8} GB");
        w.WriteLine($"  LoRA params+grads+Adam       {Gb(e.LoraState),8} GB   ({N(e.LoraParameters)} fp32 parameters x 16 bytes)");
        w.WriteLine($"  layer-boundary hidden states {Gb(e.Boundaries),8} GB");
        w.WriteLine($"  one layer's recompute        {Gb(e.LayerRecompute),8} GB");
        w.WriteLine($"  logits (fp32 x {(c.FinalLogitSoftCap is null ? 3 : 4)})            {Gb(e.Logits),8} GB");
        w.WriteLine($"  CUDA context                 {Gb(e.CudaContext),8} GB");
        w.WriteLine($"  total                        {Gb(e.Total),8} GB");
        return w.ToString();
    }

    static string Json(ModelArchitecture c, ParameterCounts n, IReadOnlyList<FootprintRow> sizes, TrainingMemoryEstimate e, int seq, int batch, int rank)
    {
        var doc = new
        {
            parameters = new { embeddings = n.Embeddings, linears_per_layer = n.LinearsPerLayer, linears = n.Linears, norms = n.Norms, head = n.Head, total = n.Total },
            size_bytes = sizes.Select(r => new { format = r.Format, linears = r.Linears, embeddings_and_head = r.EmbeddingsAndHead, norms = r.Norms, total = r.Total }),
            training_estimate_bytes = new
            {
                seq, batch, lora_r = rank,
                base_weights = e.BaseWeights, lora_parameters = e.LoraParameters, lora_state = e.LoraState, boundaries = e.Boundaries,
                layer_recompute = e.LayerRecompute, logits = e.Logits, cuda_context = e.CudaContext, total = e.Total,
            },
        };
        return JsonSerializer.Serialize(doc) + "\n";
    }

    static string N(long v) => v.ToString("N0", CultureInfo.InvariantCulture);

    static string Gb(long bytes) => (bytes / 1e9).ToString(bytes < 1e7 ? "F5" : "F3", CultureInfo.InvariantCulture);
}
