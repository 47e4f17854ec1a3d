using System.Diagnostics;
using System.Runtime.InteropServices;
using QLoraNet.Formats;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Training;

/// <summary>
/// A fine-tuning run that costs milliseconds per step, for tests that run `train` many times or as real processes:
/// a one-layer Llama of width 16 (random, fp32) with the tiny model's 32000-piece SentencePiece tokenizer, 24 one-line
/// completion examples, and a config file whose output goes to <see cref="OutDir"/>. Extra YAML lines replace keys by
/// the CLI's own <c>key=value</c> overrides.
/// </summary>
public sealed class TinyRun : IDisposable
{
    public TempDir Dir { get; } = Paths.Temp();
    public string Model => Dir["model"];
    public string Data => Dir["train.jsonl"];
    public string ConfigPath => Dir["run.yaml"];
    public string OutDir => Dir["out"];

    public TinyRun(int maxSteps = 12, int saveEvery = 1, int keepLast = 2)
    {
        WriteModel(Model);
        File.WriteAllLines(Data, Enumerable.Range(1, 24).Select(i => $"{{\"text\": \"Order {i} of the Beacon {100 + i} headlamp ships in {i % 5 + 1} days.\"}}"));
        File.WriteAllText(ConfigPath, $$"""
            model: {path: {{Model}}, dtype: fp32, device: cpu}
            quantization: none
            lora: {r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}
            data: {train: [{{Data}}], format: completion, max_seq_len: 32, packing: false}
            training:
              max_steps: {{maxSteps}}
              micro_batch_size: 1
              learning_rate: 1.0e-3
              warmup_steps: 2
              save_every: {{saveEvery}}
              eval_every: 0
              log_every: 1
              seed: 1
            output: {dir: {{OutDir}}, keep_last: {{keepLast}}}
            """);
    }

    public string CheckpointsDir => Path.Combine(OutDir, "checkpoints");

    /// <summary>A random one-layer Llama whose vocabulary fits the tiny model's tokenizer (which is copied in).</summary>
    static void WriteModel(string dir)
    {
        Directory.CreateDirectory(dir);
        const int vocab = 32000, hidden = 16, inter = 32, heads = 2, kv = 1, headDim = 8;
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": {{vocab}}, "hidden_size": {{hidden}},
             "intermediate_size": {{inter}}, "num_hidden_layers": 1, "num_attention_heads": {{heads}}, "num_key_value_heads": {{kv}},
             "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2}
            """);
        using var rng = new Generator(7);
        Tensor R(params long[] shape) => (randn(shape, generator: rng) * 0.05f).contiguous();
        var tensors = new Dictionary<string, Tensor>
        {
            ["model.embed_tokens.weight"] = R(vocab, hidden),
            ["model.layers.0.self_attn.q_proj.weight"] = R(heads * headDim, hidden),
            ["model.layers.0.self_attn.k_proj.weight"] = R(kv * headDim, hidden),
            ["model.layers.0.self_attn.v_proj.weight"] = R(kv * headDim, hidden),
            ["model.layers.0.self_attn.o_proj.weight"] = R(hidden, heads * headDim),
            ["model.layers.0.mlp.gate_proj.weight"] = R(inter, hidden),
            ["model.layers.0.mlp.up_proj.weight"] = R(inter, hidden),
            ["model.layers.0.mlp.down_proj.weight"] = R(hidden, inter),
            ["model.layers.0.input_layernorm.weight"] = ones(hidden),
            ["model.layers.0.post_attention_layernorm.weight"] = ones(hidden),
            ["model.norm.weight"] = ones(hidden),
            ["lm_head.weight"] = R(vocab, hidden),
        };
        SafeTensors.Write(Path.Combine(dir, "model.safetensors"), tensors);
        foreach (var t in tensors.Values) t.Dispose();
        foreach (var name in new[] { "tokenizer.model", "tokenizer_config.json" })
            File.Copy(Path.Combine(Paths.TinyModel, name), Path.Combine(dir, name));
    }

    public void Dispose() => Dir.Dispose();
}

/// <summary>
/// The CLI as a real child process (the app host built beside the tests), its output collected line by line as it
/// comes, so a test can act on what it prints and send it signals.
/// </summary>
public sealed class CliProcess : IDisposable
{
    readonly Process _process;
    readonly List<string> _stdout = [], _stderr = [];

    public CliProcess(string workingDirectory, params string[] args)
    {
        string host = Path.Combine(AppContext.BaseDirectory, OperatingSystem.IsWindows() ? "QLoraNet.exe" : "QLoraNet");
        var psi = new ProcessStartInfo(host)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // One libtorch thread: the run is tiny, and on a loaded machine idle OpenMP workers spinning for work cost
        // more CPU than the steps themselves.
        psi.Environment["OMP_NUM_THREADS"] = "1";
        foreach (var a in args) psi.ArgumentList.Add(a);
        _process = new Process { StartInfo = psi };
        _process.OutputDataReceived += (_, e) => { if (e.Data is { } line) lock (_stdout) { _stdout.Add(line); OnLine?.Invoke(line); } };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is { } line) lock (_stderr) _stderr.Add(line); };
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <summary>Called on a reader thread with each stdout line as it arrives (set right after construction).</summary>
    public Action<string>? OnLine { get; set; }

    public int Id => _process.Id;

    public IReadOnlyList<string> Stdout { get { lock (_stdout) return _stdout.ToList(); } }
    public IReadOnlyList<string> Stderr { get { lock (_stderr) return _stderr.ToList(); } }

    /// <summary>Waits (at most <paramref name="timeout"/>) until stdout has a line matching <paramref name="predicate"/>.</summary>
    public bool WaitForLine(Func<string, bool> predicate, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (Stdout.Any(predicate)) return true;
            if (_process.HasExited) return Stdout.Any(predicate);
            Thread.Sleep(20);
        }
        return false;
    }

    /// <summary>The exit code, after waiting for the process (and its output) to end.</summary>
    public int WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout))
        {
            _process.Kill(entireProcessTree: true);
            throw new TimeoutException($"the CLI did not exit within {timeout.TotalSeconds} s; stdout: {string.Join(" | ", Stdout.TakeLast(5))}");
        }
        _process.WaitForExit();   // drains the redirected output
        return _process.ExitCode;
    }

    /// <summary>Sends a POSIX signal (SIGTERM = 15); Kill() sends SIGKILL.</summary>
    public void Signal(int signal)
    {
        if (SysKill(_process.Id, signal) != 0) throw new InvalidOperationException($"kill({_process.Id}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    public void Kill() => _process.Kill();

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    static extern int SysKill(int pid, int signal);

    public void Dispose()
    {
        try { if (!_process.HasExited) _process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        _process.Dispose();
    }
}
