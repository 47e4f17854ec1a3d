using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Tests.Cli;
using QLoraNet.Training.Config;
using QLoraNet.Training.Recipes;
using QLoraNet.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;
using Xunit.Abstractions;

namespace QLoraNet.Tests.Formats;

/// <summary>
/// Runs the exported tiny model in real llama.cpp: the prebuilt CPU binaries of npm `node-llama-cpp`, driven by
/// scripts/llamacpp/run.mjs. The package with its CPU binaries (about 85 MB on Linux x64; see PrebuiltCpuPackage) goes into
/// scripts/llamacpp/node_modules (git-ignored) only when allowed: QLORANET_LLAMACPP_INSTALL=1 or CI=true (.ci/run
/// sets it), and the install is announced on stderr first; otherwise the tests are skipped with a reason that says
/// what they would install and where. QLORANET_SKIP_LLAMACPP=1 skips them outright; without npm, or with neither that
/// folder nor a reachable registry, they are skipped with the reason.
/// </summary>
[Trait("tier", "parity")]
public class GgufLlamaCppTests(ITestOutputHelper output)
{
    static readonly JsonElement Reference = JsonDocument.Parse(File.ReadAllText(Path.Combine(Paths.TinyModel, "reference.json"))).RootElement;

    [LlamaCppFact]
    public void Greedy_continuations_in_llama_cpp_match_the_transformers_reference()
    {
        var (path, _) = TinyModelExports.Get("f16");
        var cases = Reference.GetProperty("cases").EnumerateArray().ToList();
        var args = new List<string> { "generate", "--model", path, "--n", "16" };
        foreach (var c in cases) args.AddRange(new[] { "--prompt", c.GetProperty("prompt").GetString()! });
        var results = LlamaCpp.Run(args).GetProperty("results").EnumerateArray().ToList();
        Assert.Equal(cases.Count, results.Count);
        for (int i = 0; i < cases.Count; i++)
        {
            var inputIds = Ints(cases[i].GetProperty("input_ids"));
            var expected = Ints(cases[i].GetProperty("greedy_24")).Skip(inputIds.Length).Take(16).ToArray();
            output.WriteLine($"{cases[i].GetProperty("prompt").GetString()} -> {results[i].GetProperty("text").GetString()}");
            Assert.Equal(inputIds, Ints(results[i].GetProperty("prompt_ids")));     // llama.cpp tokenizes with our vocab as SentencePiece does
            Assert.Equal(expected, Ints(results[i].GetProperty("generated_ids")));
        }
    }

    [LlamaCppFact]
    public void Held_out_loss_in_llama_cpp_f16_matches_the_reference_and_quantized_files_stay_close()
    {
        using var tmp = Paths.Temp();
        string ids = tmp["ids.json"];
        File.WriteAllText(ids, Reference.GetProperty("heldout_text_first_512_ids").GetRawText());
        double refLoss = Reference.GetProperty("heldout_mean_loss_fp32").GetDouble();
        var loss = new Dictionary<string, double>();
        foreach (var type in new[] { "f16", "q8_0", "q4_0" })
        {
            var r = LlamaCpp.Run(new[] { "loss", "--model", TinyModelExports.Get(type).Path, "--ids-file", ids });
            Assert.Equal(511, r.GetProperty("n_predicted").GetInt32());
            loss[type] = r.GetProperty("mean_loss").GetDouble();
            output.WriteLine($"{type}: mean loss {loss[type]:F5}, perplexity {Math.Exp(loss[type]):F2} (reference fp32 {refLoss:F5})");
        }
        Assert.InRange(loss["f16"], refLoss - 0.01, refLoss + 0.01);
        Assert.InRange(Math.Exp(loss["q8_0"]) / Math.Exp(loss["f16"]), 0.98, 1.02);
        Assert.InRange(Math.Exp(loss["q4_0"]) / Math.Exp(loss["f16"]), 0.98, 1.10);
    }

    /// <summary>
    /// QAT's promise, end to end: a run trained toward q4_0 (`quantization.aware: q4_0-f16`) and exported with
    /// `export --adapter --type q4_0` is the model training computed, so llama.cpp's held-out loss on that file is ours
    /// for the aware model. Two things differ by construction: the file holds the embedding and head in q8_0 (export's
    /// rule for q4_0 files; we keep them dense), and llama.cpp's q4_0 product rounds each activation block to q8_0
    /// (ggml's vec_dot_q4_0_q8_0). The base model's q4_0 file measures that gap (control); the aware file must stay
    /// within it while the adapter moved the loss by ten times as much.
    /// </summary>
    [LlamaCppFact]
    public void A_q4_0_export_of_a_quantization_aware_run_computes_in_llama_cpp_what_training_computed()
    {
        using var tmp = Paths.Temp();
        var config = TrainConfig.Load(Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml"),
        [
            $"model.path={Paths.TinyModel}", $"data.train={Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl")}",
            "data.validation=null", "data.max_seq_len=128", "training.micro_batch_size=2", "training.gradient_accumulation_steps=1",
            "training.max_steps=8", "training.learning_rate=1e-2", "training.warmup_steps=0", "training.save_every=100",
            "training.eval_every=100", "lora.dropout=0", "quantization.type=none", "quantization.double_quant=false",
            "quantization.aware=q4_0-f16", $"output.dir={tmp["run"]}",
        ]);
        var result = LoraFinetuneRecipe.Run(config, new TrainOptions(), new NullObserver(), CancellationToken.None);
        Assert.Equal(TrainStop.Completed, result.Stop);
        var (code, _, stderr) = CliRunner.Run("export", "--model", Paths.TinyModel, "--adapter", result.FinalAdapter!, "--format", "gguf",
            "--type", "q4_0", "--out", tmp["aware-q4_0.gguf"]);
        Assert.True(code == 0, stderr);

        string ids = tmp["ids.json"];
        File.WriteAllText(ids, Reference.GetProperty("heldout_text_first_512_ids").GetRawText());
        double LlamaCppLoss(string gguf) => LlamaCpp.Run(new[] { "loss", "--model", gguf, "--ids-file", ids }).GetProperty("mean_loss").GetDouble();
        var q4_0 = BaseFormat.Parse("q4_0-f16");
        double ours = OurLoss(new ModelBuildOptions(CPU, ScalarType.Float32, new DenseFormat(ScalarType.Float32), AdapterDir: result.FinalAdapter, Aware: q4_0));
        double oursBase = OurLoss(new ModelBuildOptions(CPU, ScalarType.Float32, q4_0));
        double theirs = LlamaCppLoss(tmp["aware-q4_0.gguf"]), theirsBase = LlamaCppLoss(TinyModelExports.Get("q4_0").Path);
        output.WriteLine($"held-out loss, base q4_0: ours {oursBase:F5}, llama.cpp {theirsBase:F5}; aware run: ours {ours:F5}, llama.cpp {theirs:F5}");

        double gap = Math.Abs(theirsBase - oursBase);   // q8_0 embedding, head and activations; the decoder weights are the same
        Assert.True(gap < 0.02, $"base q4_0: llama.cpp {theirsBase:F5} vs ours {oursBase:F5}");
        Assert.True(Math.Abs(theirs - ours) < Math.Max(3 * gap, 0.003), $"aware run: llama.cpp {theirs:F5} vs ours {ours:F5} (base gap {gap:F5})");
        Assert.True(Math.Abs(ours - oursBase) > 10 * Math.Max(3 * gap, 0.003), $"the adapter moved the loss by only {ours - oursBase:F5}");
    }

    static double OurLoss(ModelBuildOptions options)
    {
        using var built = ModelBuilder.Build(Paths.TinyModel, options);
        var heldout = Ints(Reference.GetProperty("heldout_text_first_512_ids")).Select(i => (long)i).ToArray();
        using var ids = torch.tensor(heldout, [1, heldout.Length]);
        using (torch.no_grad()) return CausalLmLoss.Compute(built.Model.forward(ids), ids).item<float>();
    }

    static int[] Ints(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();
}

/// <summary>A fact skipped at discovery, with the reason, when llama.cpp via npm cannot be had here.</summary>
public sealed class LlamaCppFactAttribute : FactAttribute
{
    public LlamaCppFactAttribute()
    {
        if (LlamaCpp.Unavailable is { } reason) Skip = reason;
    }
}

public static class LlamaCpp
{
    static readonly string ScriptDir = Path.Combine(Paths.RepoRoot, "scripts", "llamacpp");
    static readonly Lazy<string?> WhyUnavailable = new(Probe);
    static readonly Lazy<bool> Installed = new(Install);

    public static string? Unavailable => WhyUnavailable.Value;

    static bool PackagePresent => File.Exists(Path.Combine(ScriptDir, "node_modules", "node-llama-cpp", "package.json"));

    public const string SkipVariable = "QLORANET_SKIP_LLAMACPP";
    public const string InstallVariable = "QLORANET_LLAMACPP_INSTALL";

    /// <summary>What the checks install, and where: said before installing, and in the skip reason when not allowed to.</summary>
    public static string InstallNote =>
        $"the llama.cpp checks need npm package node-llama-cpp {PackageVersion()} with its prebuilt CPU llama.cpp binaries ({(PrebuiltCpuPackage is null ? "every platform's, about 725 MB" : "about 85 MB")} on disk) in {Path.Combine(ScriptDir, "node_modules")} (git-ignored)";

    /// <summary>
    /// node-llama-cpp lists a prebuilt binary package per platform and GPU API as optional dependencies, and npm installs
    /// every one that matches the OS: on Linux x64 that is 640 MB of CUDA and Vulkan builds besides the 30 MB CPU one.
    /// run.mjs loads the CPU build only (gpu: false), so where we know this platform's CPU package we install just it.
    /// </summary>
    static string? PrebuiltCpuPackage =>
        (OperatingSystem.IsLinux(), OperatingSystem.IsMacOS(), OperatingSystem.IsWindows(), RuntimeInformation.OSArchitecture) switch
        {
            (true, _, _, Architecture.X64) => "linux-x64",
            (true, _, _, Architecture.Arm64) => "linux-arm64",
            (_, true, _, Architecture.Arm64) => "mac-arm64-metal",
            (_, true, _, Architecture.X64) => "mac-x64",
            (_, _, true, Architecture.X64) => "win-x64",
            (_, _, true, Architecture.Arm64) => "win-arm64",
            _ => null,
        };

    static bool IsSet(string variable) => Environment.GetEnvironmentVariable(variable) is { } v && (v == "1" || v.Equals("true", StringComparison.OrdinalIgnoreCase));

    static string PackageVersion()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(ScriptDir, "package.json")));
        return doc.RootElement.GetProperty("dependencies").GetProperty("node-llama-cpp").GetString() ?? "?";
    }

    static string? Probe()
    {
        if (IsSet(SkipVariable)) return $"{SkipVariable} is set: llama.cpp end-to-end checks skipped";
        foreach (var tool in new[] { "node", "npm" })
            if (FindOnPath(tool) is null) return $"{tool} is not on PATH; install Node.js 18+ to run the llama.cpp checks";
        if (PackagePresent) return null;
        if (!IsSet(InstallVariable) && !IsSet("CI"))
            return $"{InstallNote}; set {InstallVariable}=1 to install it and run them (CI does), or {SkipVariable}=1 to skip them without this note";
        var (code, _, err) = Exec("npm", new[] { "ping" }, ScriptDir, timeoutMs: 20_000);
        return code == 0 ? null : $"the npm registry is not reachable (npm ping: {err.Trim().Split('\n').LastOrDefault()}) and scripts/llamacpp/node_modules is absent";
    }

    static bool Install()
    {
        if (PackagePresent) return true;
        Console.Error.WriteLine($"installing: {InstallNote} (npm install, once; {SkipVariable}=1 skips these checks)");
        var args = new List<string> { "install", "--no-audit", "--no-fund" };
        if (PrebuiltCpuPackage is { } cpu)   // the lock file stays as committed: the CPU package is named, not saved
            args.AddRange(new[] { "--omit=optional", "--no-save", $"@node-llama-cpp/{cpu}@{PackageVersion()}" });
        var (code, stdout, stderr) = Exec("npm", args, ScriptDir, timeoutMs: 600_000);
        if (code != 0) throw new InvalidOperationException($"npm install in {ScriptDir} failed ({code}): {stderr}{stdout}");
        return true;
    }

    /// <summary>Runs run.mjs with <paramref name="args"/> and returns its JSON output.</summary>
    public static JsonElement Run(IEnumerable<string> args)
    {
        _ = Installed.Value;
        var (code, stdout, stderr) = Exec("node", new[] { "run.mjs" }.Concat(args), ScriptDir, timeoutMs: 300_000);
        Assert.True(code == 0, $"node run.mjs failed ({code}): {stderr}");
        return JsonDocument.Parse(stdout).RootElement;
    }

    static (int Code, string Stdout, string Stderr) Exec(string tool, IEnumerable<string> args, string dir, int timeoutMs)
    {
        var psi = new ProcessStartInfo(FindOnPath(tool)!) { WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutMs))
        {
            p.Kill(entireProcessTree: true);
            return (-1, stdout.Result, $"timed out after {timeoutMs / 1000} s");
        }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    static string? FindOnPath(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator)
            .Select(d => Path.Combine(d, OperatingSystem.IsWindows() ? tool + (tool == "npm" ? ".cmd" : ".exe") : tool))
            .FirstOrDefault(File.Exists);
}
