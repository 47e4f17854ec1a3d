using System.Security.Cryptography;
using CsCheck;

namespace QLoraNet.Tests.Fuzz;

/// <summary>
/// Seeded mutation fuzzing of every reader of user input (issue 11): each case mutates a valid seed file and asserts
/// no crash (only a clean one-line error), no hang and bounded allocation. Cases per reader: QLORANET_FUZZ_CASES
/// (default 60; CI's share of a few minutes on 2 cores); QLORANET_FUZZ_SEED replays a CsCheck seed printed by a
/// failure. With QLORANET_FUZZ_SAVE=1 a failing input is also written to tests/fixtures/fuzz/&lt;reader&gt;/, which
/// <see cref="FuzzCorpusTests"/> replays on every run.
/// </summary>
[Trait("tier", "unit")]
[Collection("fuzz")]
public sealed class ReaderFuzzTests(FuzzFixture fixture) : IClassFixture<FuzzFixture>
{
    public static int Cases => int.TryParse(Environment.GetEnvironmentVariable("QLORANET_FUZZ_CASES"), out int n) && n > 0 ? n : 60;

    public static TheoryData<string> Readers => new(["safetensors", "index", "config.json", "adapter_config.json", "tokenizer.model",
        "yaml", "override", "jsonl", "csv", "gguf", "metrics.csv", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
        "qloranet.json", "trainer_state.json", "preferences.jsonl", "task-data.jsonl", "task-data.csv", "task-data.parquet", "task.yaml"]);

    [Theory]
    [MemberData(nameof(Readers))]
    public void Mutated_inputs_end_in_success_or_a_one_line_error(string reader)
    {
        var target = fixture.Targets[reader];
        var seeds = target.Seeds();
        foreach (var seed in seeds) Assert.Null(FuzzCase.Check(target, seed));   // the seeds themselves are valid

        Gen.Select(Gen.Int[0, seeds.Count - 1], Gen.Int).Sample(c =>
        {
            var input = Mutator.Mutate(seeds[c.Item1], c.Item2);
            string? failure = FuzzCase.Check(target, input);
            if (failure is null) return;
            if (Environment.GetEnvironmentVariable("QLORANET_FUZZ_SAVE") == "1") FuzzCorpus.Save(reader, input);
            Assert.Fail($"{reader}, seed file {c.Item1}, mutation {c.Item2}: {failure}");
        }, seed: Environment.GetEnvironmentVariable("QLORANET_FUZZ_SEED"), iter: Cases, threads: 1);
    }
}

/// <summary>One set of scratch directories for the fuzz properties (set up once: the seeds need a few tensors).</summary>
public sealed class FuzzFixture : IDisposable
{
    public FuzzTargets Targets { get; } = new();
    public void Dispose() => Targets.Dispose();
}

/// <summary>The inputs fuzzing once found failing, kept as regression tests: tests/fixtures/fuzz/&lt;reader&gt;/*.bin.</summary>
public static class FuzzCorpus
{
    public static string Root => Path.Combine(Paths.RepoRoot, "tests", "fixtures", "fuzz");

    public static void Save(string reader, byte[] input)
    {
        string dir = Path.Combine(Root, reader);
        Directory.CreateDirectory(dir);
        File.WriteAllBytes(Path.Combine(dir, Convert.ToHexString(SHA256.HashData(input))[..16].ToLowerInvariant() + ".bin"), input);
    }

    public static TheoryData<string, string> Files()
    {
        var data = new TheoryData<string, string>();
        if (!Directory.Exists(Root)) return data;
        foreach (var dir in Directory.GetDirectories(Root).Order(StringComparer.Ordinal))
            foreach (var file in Directory.GetFiles(dir, "*.bin").Order(StringComparer.Ordinal))
                data.Add(Path.GetFileName(dir), Path.GetFileName(file));
        return data;
    }
}

[Trait("tier", "unit")]
[Collection("fuzz")]
public sealed class FuzzCorpusTests(FuzzFixture fixture) : IClassFixture<FuzzFixture>
{
    public static TheoryData<string, string> Corpus => FuzzCorpus.Files();

    [Theory]
    [MemberData(nameof(Corpus))]
    public void Inputs_that_once_failed_now_end_cleanly(string reader, string file)
    {
        var input = File.ReadAllBytes(Path.Combine(FuzzCorpus.Root, reader, file));
        Assert.Null(FuzzCase.Check(fixture.Targets[reader], input));
    }
}
