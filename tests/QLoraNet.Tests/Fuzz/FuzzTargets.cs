using System.Text;
using QLoraNet.Evaluation;
using QLoraNet.Evaluation.Data;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Fuzz;

/// <summary>
/// One reader under fuzzing: the file name its input is written to, valid seed inputs to mutate, and what the
/// program does with such a file. Shared by the CsCheck properties (ReaderFuzzTests) and the coverage-guided
/// SharpFuzz harness (tests/QLoraNet.Fuzz, scripts/fuzz/).
/// </summary>
public sealed record FuzzTarget(string Name, string FileName, Func<IReadOnlyList<byte[]>> Seeds, Action<string> Run)
{
    public override string ToString() => Name;
}

/// <summary>
/// Every reader of user input, each set up in its own scratch directory (the index target needs shards beside its
/// index, the YAML target a model and a data file to point at). An input may only end in an
/// <see cref="IsCleanError">expected, one-line error</see>.
/// </summary>
public sealed class FuzzTargets : IDisposable
{
    readonly string root = Path.Combine(Path.GetTempPath(), "qln-fuzz-" + Guid.NewGuid().ToString("N")[..12]);

    public FuzzTargets()
    {
        Directory.CreateDirectory(root);
        All = [SafeTensorsTarget(), IndexTarget(), ConfigJsonTarget(), AdapterConfigTarget(), TokenizerTarget(),
            YamlTarget(), OverrideTarget(), JsonlTarget(), CsvTarget(), GgufTarget(), MetricsTarget(),
            TokenizerJsonTarget(), TokenizerConfigTarget(), ChatTemplateFileTarget(), ProvenanceTarget(), TrainerStateTarget(),
            PreferencesTarget(), TaskDataTarget("jsonl"), TaskDataTarget("csv"), TaskDataTarget("parquet"), TaskFileTarget()];
    }

    public IReadOnlyList<FuzzTarget> All { get; }

    public FuzzTarget this[string name] => All.First(t => t.Name == name);

    public void Dispose()
    {
        try { Directory.Delete(root, recursive: true); } catch (IOException) { }
    }

    /// <summary>The kinds of exception a reader may end with: a user error, with one short printable line.</summary>
    public static bool IsCleanError(Exception e, out string why)
    {
        why = "";
        if (e is not (InvalidDataException or NotSupportedException or FileNotFoundException or ConfigException or TaskException))
            why = $"unexpected exception type {e.GetType().FullName}";
        else if (e.Message.Contains('\n') || e.Message.Contains('\r')) why = "message spans several lines";
        else if (e.Message.Length > 1200) why = $"message of {e.Message.Length} characters";
        else if (e.Message.Any(c => char.IsControl(c))) why = "message holds a control character";
        return why.Length == 0;
    }

    string Dir(string name)
    {
        string d = Path.Combine(root, name);
        Directory.CreateDirectory(d);
        return d;
    }

    static byte[] SafeTensorsBytes(string path, Dictionary<string, Tensor> tensors, Dictionary<string, string>? metadata = null)
    {
        SafeTensors.Write(path, tensors, metadata);
        foreach (var t in tensors.Values) t.Dispose();
        var bytes = File.ReadAllBytes(path);
        File.Delete(path);
        return bytes;
    }

    FuzzTarget SafeTensorsTarget()
    {
        string dir = Dir("safetensors");
        return new("safetensors", Path.Combine(dir, "model.safetensors"), () =>
        [
            SafeTensorsBytes(Path.Combine(dir, "a"), new() { ["w"] = arange(6f).reshape(2, 3), ["b"] = ones(3, ScalarType.BFloat16), ["i"] = arange(4L) },
                new() { ["format"] = "pt" }),
            SafeTensorsBytes(Path.Combine(dir, "b"), new() { ["model.layers.0.self_attn.q_proj.weight"] = zeros(4, 4, ScalarType.Float16), ["s"] = tensor(1.5f) }),
        ], path =>
        {
            using var f = SafeTensorsFile.Open(path);
            foreach (var name in f.Names) f.Read(name).Dispose();
        });
    }

    FuzzTarget IndexTarget()
    {
        string dir = Dir("index");
        SafeTensors.Write(Path.Combine(dir, "model-00001-of-00002.safetensors"), new Dictionary<string, Tensor> { ["a.weight"] = ones(2), ["b.weight"] = ones(3) });
        SafeTensors.Write(Path.Combine(dir, "model-00002-of-00002.safetensors"), new Dictionary<string, Tensor> { ["c.weight"] = ones(4) });
        string index = """{"metadata": {"total_size": 36}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00001-of-00002.safetensors", "c.weight": "model-00002-of-00002.safetensors"}}""";
        return new("index", Path.Combine(dir, CheckpointReader.IndexFile),
            () => [Encoding.UTF8.GetBytes(index), File.ReadAllBytes(Path.Combine(Paths.TinyModel, CheckpointReader.IndexFile))],
            _ =>
            {
                using var ckpt = CheckpointReader.Open(dir);
                foreach (var name in ckpt.Names) ckpt.Read(name).Dispose();
            });
    }

    FuzzTarget ConfigJsonTarget()
    {
        string dir = Dir("config");
        return new("config.json", Path.Combine(dir, ModelArchitecture.ConfigFileName),
            () => [File.ReadAllBytes(Path.Combine(Paths.TinyModel, ModelArchitecture.ConfigFileName)),
                   // Every family's fields (Llama 3 RoPE scaling, Mistral windows, Qwen2 biases, Gemma head_dim, Gemma 2 caps).
                   .. Families.Select(f => File.ReadAllBytes(Path.Combine(FamilyDir(f), ModelArchitecture.ConfigFileName))),
                   Encoding.UTF8.GetBytes("""{"architectures":["LlamaForCausalLM"],"hidden_size":4096,"intermediate_size":11008,"num_attention_heads":32,"num_hidden_layers":32,"num_key_value_heads":8,"vocab_size":32000,"rms_norm_eps":1e-05,"rope_scaling":null,"eos_token_id":[2,3],"head_dim":128}""")],
            path =>
            {
                var c = ModelFamilies.Load(path);
                _ = c.ParameterCount;
                _ = c.ExpectedTensors().Count;
            });
    }

    FuzzTarget AdapterConfigTarget()
    {
        string dir = Dir("adapter");
        var config = new AdapterConfig(new LoraSettings(8, 16, 0.05, false, ["q_proj", "v_proj"], [0, 1]));
        return new("adapter_config.json", Path.Combine(dir, AdapterConfig.FileName),
            () => [Encoding.UTF8.GetBytes(config.ToJson().ToJsonString())],
            path =>
            {
                var c = AdapterConfig.Load(path);
                _ = c.Lora.Scaling;
            });
    }

    FuzzTarget TokenizerTarget()
    {
        string dir = Dir("tokenizer");
        return new("tokenizer.model", Path.Combine(dir, SentencePieceModel.FileName),
            () => [File.ReadAllBytes(Path.Combine(Paths.TinyModel, SentencePieceModel.FileName))],
            path =>
            {
                var m = SentencePieceModel.Load(path);
                _ = m.Pieces.Count;
                var tok = SentencePieceTextTokenizer.Load(Path.GetDirectoryName(path)!);
                tok.Encode("Hello world! 1234 ünïcode");
            });
    }

    static readonly string[] Families = ["llama3", "mistral", "qwen2", "gemma", "gemma2"];

    static string FamilyDir(string family) => Path.Combine(Paths.RepoRoot, "tests", "fixtures", "families", family);

    static void CopyInto(string dir, string family, params string[] files)
    {
        foreach (var f in files) File.Copy(Path.Combine(FamilyDir(family), f), Path.Combine(dir, f), overwrite: true);
    }

    /// <summary>What training and generate do with a tokenizer directory: load the tokenizer, encode and decode a text
    /// with letters, digits, CJK and a character beyond the BMP, resolve the chat template (auto) and tokenize a
    /// conversation with it.</summary>
    static void UseTokenizerDir(string dir)
    {
        var tok = TextTokenizers.Load(dir);
        var ids = tok.Encode("Hello world! 1234 ünïcode 日本語 𝔘 <s></s>");
        tok.Decode(ids);
        foreach (int id in ids) tok.PieceText(id);
        var template = ChatTemplates.Resolve(TemplateKind.Auto, tok, TokenizerConfigJson.Load(dir));
        if (template is null) return;
        var segments = template.Render([new ChatMessage(ChatMessage.User, "What is 2+2?"), new ChatMessage(ChatMessage.Assistant, "4.")], addGenerationPrompt: false);
        ExampleEncoder.Tokenize(tok, segments, template.WholeText);
    }

    /// <summary>tokenizer.json (byte-level BPE: vocab, merges, added tokens, normalizer, Split regexes, post-processor).</summary>
    FuzzTarget TokenizerJsonTarget()
    {
        string dir = Dir("tokenizer-json");
        CopyInto(dir, "llama3", TokenizerConfigJson.FileName);
        return new("tokenizer.json", Path.Combine(dir, TokenizerJson.FileName),
            () => [File.ReadAllBytes(Path.Combine(FamilyDir("llama3"), TokenizerJson.FileName)),
                   File.ReadAllBytes(Path.Combine(FamilyDir("qwen2"), TokenizerJson.FileName))],
            _ => UseTokenizerDir(dir));
    }

    /// <summary>tokenizer_config.json (class, special tokens, added_tokens_decoder, chat_template) beside a tokenizer.model.</summary>
    FuzzTarget TokenizerConfigTarget()
    {
        string dir = Dir("tokenizer-config");
        CopyInto(dir, "mistral", SentencePieceModel.FileName);
        return new("tokenizer_config.json", Path.Combine(dir, TokenizerConfigJson.FileName), () =>
        {
            var seeds = new List<byte[]> { File.ReadAllBytes(Path.Combine(FamilyDir("mistral"), TokenizerConfigJson.FileName)),
                File.ReadAllBytes(Path.Combine(FamilyDir("gemma"), TokenizerConfigJson.FileName)) };
            // Mistral's config carrying each other family's template, so every recogniser sees mutations.
            foreach (var family in new[] { "llama3", "qwen2" })
            {
                var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(FamilyDir("mistral"), TokenizerConfigJson.FileName)))!;
                config["chat_template"] = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(FamilyDir(family), TokenizerConfigJson.FileName)))!["chat_template"]!.DeepClone();
                seeds.Add(Encoding.UTF8.GetBytes(config.ToJsonString()));
            }
            return seeds;
        }, _ => UseTokenizerDir(dir));
    }

    /// <summary>chat_template.jinja, which takes precedence over tokenizer_config.json's chat_template.</summary>
    FuzzTarget ChatTemplateFileTarget()
    {
        string dir = Dir("chat-template");
        CopyInto(dir, "mistral", SentencePieceModel.FileName, TokenizerConfigJson.FileName);
        return new("chat_template.jinja", Path.Combine(dir, TokenizerConfigJson.ChatTemplateFileName),
            () => Families.Select(f => Encoding.UTF8.GetBytes(TokenizerConfigJson.Load(FamilyDir(f)).ChatTemplate!)).ToList(),
            _ => UseTokenizerDir(dir));
    }

    /// <summary>qloranet.json, the adapter's base-format sidecar.</summary>
    FuzzTarget ProvenanceTarget()
    {
        string dir = Dir("provenance");
        return new("qloranet.json", Path.Combine(dir, AdapterProvenance.FileName),
            () => [Encoding.UTF8.GetBytes("{\n  \"base_format\": \"nf4-dq\"\n}\n"), Encoding.UTF8.GetBytes("{\"base_format\": \"fp4-b128\"}")],
            _ => AdapterProvenance.Load(dir));
    }

    string DataFile()
    {
        string f = Path.Combine(Dir("data"), "t.jsonl");
        File.WriteAllText(f, "{\"text\": \"hello\"}\n");
        return f;
    }

    /// <summary>
    /// The YAML seeds name the model and the data file by placeholders, substituted just before parsing, so a saved
    /// regression input holds no path of the machine that found it.
    /// </summary>
    public const string ModelPlaceholder = "@TINY_MODEL@", DataPlaceholder = "@TRAIN_DATA@";

    FuzzTarget YamlTarget()
    {
        string dir = Dir("yaml"), train = DataFile();
        string quickstart = File.ReadAllText(Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml"))
            .Replace("models/tiny-llama-sotu", ModelPlaceholder)
            .Replace("datasets/sales/train.jsonl", DataPlaceholder).Replace("datasets/sales/validation.jsonl", DataPlaceholder);
        string resolved = Path.Combine(dir, "resolved.yaml");
        return new("yaml", Path.Combine(dir, "config.yaml"),
            () => [Encoding.UTF8.GetBytes(quickstart), Encoding.UTF8.GetBytes($"model: {{path: {ModelPlaceholder}}}\ndata: {{train: [{DataPlaceholder}]}}\nlora: {{r: 8, target_modules: [q_proj, v_proj], layers: [0, 1]}}\n")],
            path =>
            {
                // Byte-level substitution: the mutated input need not be valid UTF-8, and that must reach the reader.
                var bytes = File.ReadAllBytes(path);
                File.WriteAllBytes(resolved, Substitute(Substitute(bytes, ModelPlaceholder, Paths.TinyModel), DataPlaceholder, train));
                TrainConfig.Load(resolved).ToYaml();
            });
    }

    static byte[] Substitute(byte[] input, string placeholder, string value)
    {
        byte[] from = Encoding.ASCII.GetBytes(placeholder), to = Encoding.UTF8.GetBytes(value);
        var output = new List<byte>(input.Length);
        for (int i = 0; i < input.Length;)
        {
            if (input.AsSpan(i).StartsWith(from)) { output.AddRange(to); i += from.Length; }
            else output.Add(input[i++]);
        }
        return output.ToArray();
    }

    FuzzTarget OverrideTarget()
    {
        string dir = Dir("override"), train = DataFile();
        string minimal = $"model: {{path: {Paths.TinyModel}}}\ndata: {{train: [{train}]}}\n";
        return new("override", Path.Combine(dir, "override.txt"),
            () => [Encoding.UTF8.GetBytes("lora.target_modules=[q_proj, v_proj]"), Encoding.UTF8.GetBytes("training.learning_rate=1e-4"),
                   Encoding.UTF8.GetBytes("data.columns={messages: conv}")],
            path =>
            {
                // The override arrives as a command-line argument: text, decoded leniently as the shell would pass it.
                string text = Encoding.UTF8.GetString(UserFile.ReadBytes(path, Mutator.MaxBytes));
                TrainConfig.Parse(minimal, "x.yaml", [text]);
            });
    }

    FuzzTarget JsonlTarget()
    {
        string dir = Dir("jsonl");
        var lines = File.ReadLines(Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl")).Take(3);
        var instruction = File.ReadLines(Path.Combine(Paths.RepoRoot, "datasets", "sales", "train_instruction.jsonl")).Take(3);
        return new("jsonl", Path.Combine(dir, "train.jsonl"),
            () => [Encoding.UTF8.GetBytes(string.Join("\n", lines) + "\n"), Encoding.UTF8.GetBytes(string.Join("\r\n", instruction))],
            path =>
            {
                ExampleFiles.Read([path], DataFormat.Chat, new ColumnMapping(), skipBadRows: true);
                ExampleFiles.Read([path], DataFormat.Instruction, new ColumnMapping(), skipBadRows: false);
            });
    }

    FuzzTarget CsvTarget()
    {
        string dir = Dir("csv");
        var csv = File.ReadLines(Path.Combine(Paths.RepoRoot, "datasets", "sales", "train_instruction.csv")).Take(4);
        const string chat = "messages,extra\n\"[{\"\"role\"\": \"\"user\"\", \"\"content\"\": \"\"hi\"\"}, {\"\"role\"\": \"\"assistant\"\", \"\"content\"\": \"\"hello, there\"\"}]\",x\n";
        return new("csv", Path.Combine(dir, "train.csv"),
            () => [Encoding.UTF8.GetBytes(string.Join("\n", csv) + "\n"), Encoding.UTF8.GetBytes(chat)],
            path =>
            {
                ExampleFiles.Read([path], DataFormat.Instruction, new ColumnMapping(), skipBadRows: true);
                ExampleFiles.Read([path], DataFormat.Chat, new ColumnMapping(), skipBadRows: false);
            });
    }

    /// <summary>metrics.csv as a resume reads it (the rows the trainer wrote, and a row cut off by a kill).</summary>
    FuzzTarget MetricsTarget()
    {
        string dir = Dir("metrics");
        string seedPath = Path.Combine(dir, "seed.csv");
        var log = new QLoraNet.Training.Trainer.MetricsLog(seedPath, 0);
        for (int step = 1; step <= 4; step++)
            log.Append(new(step, step / 10.0, 3 - step / 10.0, step % 2 == 0 ? 2.9 : null, 1e-3, 0.4, 1000, 500.5, 2, 2 * step, 300));
        var bytes = File.ReadAllBytes(seedPath);
        File.Delete(seedPath);
        return new("metrics.csv", Path.Combine(dir, "metrics.csv"), () => [bytes, bytes[..^7]], path =>
        {
            QLoraNet.Training.Trainer.MetricsLog.Read(path);
            QLoraNet.Training.Trainer.MetricsLog.Read(path, throughStep: 2);
        });
    }

    FuzzTarget GgufTarget()
    {
        string dir = Dir("gguf");
        string seed = Path.Combine(dir, "seed.gguf");
        var metadata = new List<KeyValuePair<string, GgufValue>>
        {
            new("general.architecture", GgufValue.String("llama")),
            new("llama.block_count", GgufValue.UInt32(1)),
            new("tokenizer.ggml.tokens", GgufValue.StringArray(["<unk>", "<s>", "</s>", "▁hi"])),
            new("tokenizer.ggml.scores", GgufValue.Float32Array([0f, 0f, 0f, -1.5f])),
            new("tokenizer.ggml.token_type", GgufValue.Int32Array([2, 3, 3, 1])),
        };
        var tensors = new List<GgufTensorSpec> { new("token_embd.weight", [4, 32], GgmlType.F32), new("output_norm.weight", [32], GgmlType.F32) };
        GgufWriter.Write(seed, metadata, tensors, (t, s) => s.Write(new byte[t.ByteSize]));
        var bytes = File.ReadAllBytes(seed);
        File.Delete(seed);
        return new("gguf", Path.Combine(dir, "model.gguf"), () => [bytes], path =>
        {
            using var r = GgufReader.Open(path);
            foreach (var t in r.Tensors) r.ReadBytes(t);
        });
    }

    /// <summary>trainer_state.json, as a resume reads a checkpoint's.</summary>
    FuzzTarget TrainerStateTarget()
    {
        string dir = Dir("trainer-state");
        var seed = new QLoraNet.Training.Trainer.TrainerState(12, 1, 7, 2.75, 1, 12345, 2.5, WorldSize: 2, MicroBatchSize: 4, GradientAccumulationSteps: 2);
        seed.Save(dir);
        var bytes = File.ReadAllBytes(Path.Combine(dir, QLoraNet.Training.Trainer.TrainerState.FileName));
        return new("trainer_state.json", Path.Combine(dir, QLoraNet.Training.Trainer.TrainerState.FileName), () => [bytes],
            _ => QLoraNet.Training.Trainer.TrainerState.Load(dir));
    }

    /// <summary>DPO's preference pairs (prompt messages or text, chosen, rejected).</summary>
    FuzzTarget PreferencesTarget()
    {
        string dir = Dir("preferences");
        var lines = File.ReadLines(Path.Combine(Paths.RepoRoot, "datasets", "sales", "preferences_train.jsonl")).Take(3);
        const string plain = "{\"prompt\": \"Hi?\", \"chosen\": \"Hello.\", \"rejected\": \"No.\"}\n";
        return new("preferences.jsonl", Path.Combine(dir, "preferences.jsonl"),
            () => [Encoding.UTF8.GetBytes(string.Join("\n", lines) + "\n"), Encoding.UTF8.GetBytes(plain)],
            path =>
            {
                ExampleFiles.Read([path], DataFormat.Preference, new ColumnMapping(), skipBadRows: true);
                ExampleFiles.Read([path], DataFormat.Preference, new ColumnMapping(), skipBadRows: false);
            });
    }

    /// <summary>An evaluation task's data file (--task-data), in each format the hub serves.</summary>
    FuzzTarget TaskDataTarget(string extension)
    {
        string dir = Dir("task-data-" + extension);
        var jsonl = File.ReadLines(Path.Combine(Paths.RepoRoot, "datasets", "sales", "mc_test.jsonl")).Take(3).ToList();
        var arc = File.ReadLines(Path.Combine(Paths.RepoRoot, "tests", "fixtures", "eval", "arc", "ARC-Easy", "test.jsonl")).Take(2).ToList();
        Func<IReadOnlyList<byte[]>> seeds = extension switch
        {
            "jsonl" => () => [Encoding.UTF8.GetBytes(string.Join("\n", jsonl) + "\n"), Encoding.UTF8.GetBytes(string.Join("\n", arc) + "\n")],
            "csv" => () => [Encoding.UTF8.GetBytes("passage,question,label\n\"A, b\",is it,1\nC,is it not,0\n"),
                            Encoding.UTF8.GetBytes(File.ReadAllText(Path.Combine(Paths.RepoRoot, "datasets", "sales", "validation_instruction.csv"))[..600])],
            // Parquet.Net's own files (Snappy; uncompressed in several row groups) and parquet-mr's dictionary pages.
            _ => () => [ParquetSeed(Path.Combine(dir, "seed.parquet")),
                        ParquetSeed(Path.Combine(dir, "seed.parquet"), new Parquet.ParquetOptions { CompressionMethod = Parquet.CompressionMethod.None, RowGroupSize = 1 }),
                        File.ReadAllBytes(Path.Combine(Paths.RepoRoot, "tests", "fixtures", "parquet", "nation.dict.parquet"))],
        };
        return new("task-data." + extension, Path.Combine(dir, "test." + extension), seeds, path => DocFiles.Read(path));
    }

    /// <summary>A small hub-layout parquet file: flat columns and ARC's struct of lists.</summary>
    static byte[] ParquetSeed(string path, Parquet.ParquetOptions? options = null)
    {
        var rows = new[]
        {
            new ParquetRow { id = "q1", question = "Which is a gas?", answerKey = "B", choices = new() { text = ["ice", "steam"], label = ["A", "B"] } },
            new ParquetRow { id = "q2", question = "2 + 2?", answerKey = "A", choices = new() { text = ["4", "5", "6"], label = ["A", "B", "C"] } },
        };
        Parquet.Serialization.ParquetSerializer.SerializeAsync(rows, path, options).GetAwaiter().GetResult();
        var bytes = File.ReadAllBytes(path);
        File.Delete(path);
        return bytes;
    }

    public sealed class ParquetChoices { public List<string> text { get; set; } = []; public List<string> label { get; set; } = []; }
    public sealed class ParquetRow
    {
        public string id { get; set; } = "";
        public string question { get; set; } = "";
        public ParquetChoices choices { get; set; } = new();
        public string answerKey { get; set; } = "";
    }

    /// <summary>The data directory of the task file target, by placeholder (substituted before reading, as the YAML target does).</summary>
    public const string TaskDataPlaceholder = "@TASK_DATA@";

    /// <summary>
    /// An evaluation task file (lm-evaluation-harness's YAML), read and run end to end on a mock model: prompts from its
    /// templates, filters and metrics (with their regular expressions) over three rows of the sales questions.
    /// </summary>
    FuzzTarget TaskFileTarget()
    {
        string dir = Dir("task-file"), data = Dir("task-file-data");
        File.WriteAllLines(Path.Combine(data, "test.jsonl"), File.ReadLines(Path.Combine(Paths.RepoRoot, "datasets", "sales", "mc_test.jsonl")).Take(3));
        string tasks = Path.Combine(Paths.RepoRoot, "src", "Evaluation", "Tasks");
        string Seed(string file, params (string From, string To)[] edits) =>
            edits.Aggregate(File.ReadAllText(Path.Combine(tasks, file)), (t, e) => t.Replace(e.From, e.To));
        string sales = Seed("sales_mc.yaml", ("dataset_path: datasets/sales", "dataset_path: " + TaskDataPlaceholder), ("test_split: mc_test", "test_split: test"));
        string gsm = Seed("gsm8k.yaml", ("dataset_path: openai/gsm8k", "dataset_path: " + TaskDataPlaceholder), ("dataset_name: main\n", ""),
            ("num_fewshot: 5", "num_fewshot: 0"), ("training_split: train\n", ""), ("fewshot_split: train\n", ""));
        string resolved = Path.Combine(dir, "resolved.yaml");
        return new("task.yaml", Path.Combine(dir, "task.yaml"), () => [Encoding.UTF8.GetBytes(sales), Encoding.UTF8.GetBytes(gsm)], path =>
        {
            File.WriteAllBytes(resolved, Substitute(File.ReadAllBytes(path), TaskDataPlaceholder, data));
            var selection = TaskCatalog.BuiltIn().Resolve([resolved]);
            EvalRunner.Run(new QLoraNet.Tests.Evaluation.MockScoringModel(generate: p => "so #### 1,200 " + p[^Math.Min(p.Length, 200)..]), selection,
                new EvalOptions(Limit: 3));
        });
    }
}
