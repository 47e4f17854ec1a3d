using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using QLoraNet.Formats;
using QLoraNet.Training.Config;
using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// Decides whether a checkpoint can be resumed under a config: exact resume (the same losses as a run never
/// stopped) holds only when everything that shapes the computation is unchanged. The config a checkpoint was trained
/// under is saved inside it (<see cref="CheckpointStore.ConfigFile"/>, written by <see cref="Snapshot"/>, with a
/// fingerprint of the model's and the data's files as comment lines); checkpoints from before that are compared with
/// the run's <c>config.yaml</c> beside <c>checkpoints/</c>.
/// Keys that may change freely (<see cref="FreeKeys"/>) only affect logging, evaluation and checkpoint cadence,
/// memory/speed trade-offs that compute the same numbers, or where files go. Every other key breaks equivalence
/// and must be equal (default-deny, so a key added later is protected until someone lists it here):
/// the model (path, file identity, dtype), the base format (quantization.*), the LoRA shape and targets (lora.*:
/// r, alpha, dropout, target_modules, layers, rslora), the data (files and their identity, format, template,
/// system prompt, columns, max_seq_len, packing, train_on_inputs, skip_bad_rows, validation split), the schedule
/// (learning_rate, scheduler, warmup, max_steps/epochs, seed) and the batch (micro_batch_size,
/// gradient_accumulation_steps) and the optimizer (weight_decay, adam_*, max_grad_norm).
/// </summary>
public static class ResumeCompatibility
{
    /// <summary>Keys whose change a resume accepts silently: they do not change what a step computes.</summary>
    public static readonly IReadOnlySet<string> FreeKeys = new HashSet<string>(StringComparer.Ordinal)
    {
        "training.log_every", "training.eval_every", "training.save_every", "training.early_stopping_patience",
        "training.gradient_checkpointing", "training.uncheckpointed_layers", "training.embedding_on_host", "training.optimizer_on_host", "training.keep_dequantized_weights", "training.checkpoints_on_host", "output.keep_last", "output.dir", "model.device", "model.allow_non_finite_weights",
    };

    /// <summary>Keys holding file paths, compared as full paths (a relative and an absolute spelling of one file agree).</summary>
    static readonly IReadOnlySet<string> PathKeys = new HashSet<string>(StringComparer.Ordinal) { "model.path", "data.train", "data.validation" };

    const string ModelFingerprintKey = "model files";
    const string DataFingerprintKey = "data files";

    /// <summary>One key that differs: its value in the checkpoint's config and in the new one.</summary>
    public sealed record Difference(string Key, string Saved, string Now)
    {
        public override string ToString() => Key is ModelFingerprintKey or DataFingerprintKey
            ? $"{Key} changed since the checkpoint (fingerprint {Saved} -> {Now})"
            : $"{Key} {SafeText.Clip(Saved, 80)} -> {SafeText.Clip(Now, 80)}";
    }

    /// <summary>The resolved config to save in each checkpoint: fingerprints of the model's and the data's files as
    /// comment lines (ignored by a YAML reader, so the file stays a usable config), then the config.</summary>
    public static string Snapshot(TrainConfig config) =>
        $"# {ModelFingerprintKey}: {ModelFingerprint(config.Model.Path)}\n# {DataFingerprintKey}: {DataFingerprint(config.Data)}\n" + config.ToYaml();

    /// <summary>
    /// The differences that break exact resume between the config <paramref name="checkpoint"/> was trained under and
    /// <paramref name="config"/>; empty when it can be resumed. Reads only; a missing or unreadable saved config is an
    /// error unless <paramref name="allowChanges"/>. Throws (one line listing every difference) when there are
    /// differences and <paramref name="allowChanges"/> is false.
    /// </summary>
    public static IReadOnlyList<Difference> Check(string checkpoint, TrainConfig config, bool allowChanges)
    {
        string? savedPath = SavedConfigPath(checkpoint);
        if (savedPath is null)
        {
            if (allowChanges) return [new Difference("(saved config)", "missing", "not checked")];
            throw new InvalidOperationException(
                $"--resume: no saved config beside checkpoint '{checkpoint}' ({CheckpointStore.ConfigFile} in it or in its run folder), so an exact resume cannot be checked; pass --resume-with-changes to resume anyway");
        }
        string saved = UserFile.ReadText(savedPath, TrainConfig.MaxFileBytes, "saved config");
        var differences = Compare(saved, savedPath, Snapshot(config));
        if (differences.Count > 0 && !allowChanges)
            throw new InvalidOperationException(
                $"--resume: {differences.Count} change(s) since checkpoint '{checkpoint}' break exact resume: {string.Join("; ", differences)} "
                + $"(compared with {savedPath}); restore them, or pass --resume-with-changes to continue with the new values");
        return differences;
    }

    /// <summary>The saved config of <paramref name="checkpoint"/>: its own, else its run's (checkpoints/../config.yaml).</summary>
    public static string? SavedConfigPath(string checkpoint)
    {
        string own = Path.Combine(checkpoint, CheckpointStore.ConfigFile);
        if (File.Exists(own)) return own;
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(checkpoint));
        string? run = Path.GetDirectoryName(Path.GetDirectoryName(full));
        string runConfig = run is null ? "" : Path.Combine(run, RunOutput.ResolvedConfigFile);
        return run is not null && File.Exists(runConfig) ? runConfig : null;
    }

    /// <summary>The breaking differences between two snapshots (or plain resolved configs), key by key.</summary>
    public static IReadOnlyList<Difference> Compare(string savedYaml, string savedSource, string newYaml)
    {
        var before = Flatten(savedYaml, savedSource);
        var after = Flatten(newYaml, "the new config");
        var differences = new List<Difference>();
        foreach (var key in before.Keys.Union(after.Keys).Order(StringComparer.Ordinal))
        {
            if (FreeKeys.Contains(key)) continue;
            string a = before.GetValueOrDefault(key) ?? "(absent)", b = after.GetValueOrDefault(key) ?? "(absent)";
            // A snapshot from before fingerprints existed has none: nothing to compare them with.
            if (key is ModelFingerprintKey or DataFingerprintKey && (!before.ContainsKey(key) || !after.ContainsKey(key))) continue;
            if (!Same(key, a, b)) differences.Add(new Difference(key, a, b));
        }
        return differences;
    }

    static bool Same(string key, string a, string b)
    {
        if (a == b) return true;
        if (PathKeys.Contains(key)) return FullPaths(a) == FullPaths(b);
        return double.TryParse(a, NumberStyles.Float, CultureInfo.InvariantCulture, out double x)
            && double.TryParse(b, NumberStyles.Float, CultureInfo.InvariantCulture, out double y) && x == y;
    }

    static string FullPaths(string value)
    {
        if (value is "null" or "(absent)") return value;
        var parts = value.StartsWith('[') && value.EndsWith(']') ? value[1..^1].Split(", ") : [value];
        return string.Join(", ", parts.Select(p => Path.TrimEndingDirectorySeparator(Path.GetFullPath(p))));
    }

    /// <summary>"section.key" -> value text (lists as "[a, b]"), plus the fingerprint comment lines.</summary>
    static Dictionary<string, string> Flatten(string yaml, string source)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in yaml.Split('\n'))
            foreach (var key in new[] { ModelFingerprintKey, DataFingerprintKey })
                if (line.StartsWith($"# {key}: ", StringComparison.Ordinal)) values[key] = line[(key.Length + 4)..].Trim();
        YamlStream stream;
        stream = BoundedYaml.Load(yaml, line => $"{source}:{line}", m => new InvalidDataException(m));
        if (stream.Documents.Count != 1 || stream.Documents[0].RootNode is not YamlMappingNode root)
            throw new InvalidDataException($"{source}: not a saved config (expected one YAML mapping)");
        Walk(root, "", values);
        return values;
    }

    static void Walk(YamlMappingNode map, string prefix, Dictionary<string, string> values)
    {
        foreach (var (k, v) in map.Children)
        {
            string key = prefix + ((k as YamlScalarNode)?.Value ?? "?");
            switch (v)
            {
                case YamlMappingNode m: Walk(m, key + ".", values); break;
                case YamlSequenceNode s: values[key] = "[" + string.Join(", ", s.Children.Select(c => (c as YamlScalarNode)?.Value ?? "?")) + "]"; break;
                case YamlScalarNode s: values[key] = s.Value ?? "null"; break;
            }
        }
    }

    /// <summary>config.json (and the index) by content, each safetensors shard by name and size: a model replaced in
    /// place under the same path shows here. 16 hex digits.</summary>
    static string ModelFingerprint(string modelDir)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var file in Directory.EnumerateFiles(modelDir).Order(StringComparer.Ordinal))
        {
            string name = Path.GetFileName(file);
            if (name is not (ModelArchitecture.ConfigFileName or CheckpointReader.IndexFile) && !name.EndsWith(".safetensors", StringComparison.Ordinal)) continue;
            hash.AppendData(Encoding.UTF8.GetBytes($"{name}:{new FileInfo(file).Length}\n"));
            if (!name.EndsWith(".safetensors", StringComparison.Ordinal))
                hash.AppendData(UserFile.ReadBytes(file, UserFile.MaxJsonBytes, "model JSON"));
        }
        return Convert.ToHexString(hash.GetHashAndReset())[..16].ToLowerInvariant();
    }

    /// <summary>Each data file by size and its first and last MiB (cheap for any size; an edit or an append shows).</summary>
    static string DataFingerprint(DataConfig data)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var file in data.Train.Append(data.Validation).OfType<string>())
        {
            using var stream = UserFile.OpenRead(file, "data file");
            long length = stream.Length;
            hash.AppendData(Encoding.UTF8.GetBytes($"{Path.GetFileName(file)}:{length}\n"));
            var buffer = new byte[(int)Math.Min(length, 1 << 20)];
            stream.ReadExactly(buffer);
            hash.AppendData(buffer);
            if (length > buffer.Length)
            {
                stream.Seek(-buffer.Length, SeekOrigin.End);
                stream.ReadExactly(buffer);
                hash.AppendData(buffer);
            }
        }
        return Convert.ToHexString(hash.GetHashAndReset())[..16].ToLowerInvariant();
    }
}
