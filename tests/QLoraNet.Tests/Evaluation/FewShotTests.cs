using QLoraNet.Evaluation;

namespace QLoraNet.Tests.Evaluation;

/// <summary>Few-shot prompts: byte-identical to a hand-written string for a fixed seed, the harness's layout
/// (description, text + target_delimiter + answer + fewshot_delimiter per shot, then the question), different seeds
/// draw differently, and the scored row is never its own example when the split is shared.</summary>
[Trait("tier", "unit")]
public class FewShotTests
{
    const string Yaml = """
        task: capitals
        dataset_path: DATA_DIR
        test_split: test
        training_split: train
        output_type: multiple_choice
        description: "Capitals.\n\n"
        doc_to_text: "Country: {{country}}\nCapital:"
        doc_to_target: "{{choices.index(capital)}}"
        doc_to_choice: "{{choices}}"
        num_fewshot: 2
        """;

    const string Train = """
        {"country": "France", "capital": "Paris", "choices": ["Paris", "Lyon"]}
        {"country": "Italy", "capital": "Rome", "choices": ["Milan", "Rome"]}
        {"country": "Spain", "capital": "Madrid", "choices": ["Madrid", "Seville"]}
        {"country": "Peru", "capital": "Lima", "choices": ["Cusco", "Lima"]}
        {"country": "Chile", "capital": "Santiago", "choices": ["Santiago", "Valparaiso"]}
        """;

    const string Test = """
        {"country": "Japan", "capital": "Tokyo", "choices": ["Osaka", "Tokyo"]}
        {"country": "Kenya", "capital": "Nairobi", "choices": ["Nairobi", "Mombasa"]}
        """;

    static List<string> Contexts(string seedOverride = "", ulong seed = 1234, string test = Test, string yaml = Yaml)
    {
        using var dir = Paths.Temp();
        File.WriteAllText(dir["train.jsonl"], Train);
        string task = EvalFixtures.WriteTask(dir, yaml + seedOverride, test);
        var model = new MockScoringModel();
        EvalRunner.Run(model, TaskCatalog.BuiltIn().Resolve([task]), new EvalOptions(FewshotSeed: seed));
        return model.Requests.Select(r => r.Context).Distinct().Order(StringComparer.Ordinal).ToList();
    }

    [Fact]
    public void Prompt_is_byte_identical_for_seed_1234()
    {
        var contexts = Contexts();
        // Seed 1234 draws France, Italy for the first row and Italy, Chile for the second (SplitMix64 + Fisher-Yates);
        // Italy's answer is its choice at the target index (1: Rome).
        Assert.Equal(
            "Capitals.\n\n"
            + "Country: France\nCapital: Paris\n\n"
            + "Country: Italy\nCapital: Rome\n\n"
            + "Country: Japan\nCapital:",
            contexts.Single(c => c.EndsWith("Japan\nCapital:")));
        Assert.Equal(
            "Capitals.\n\n"
            + "Country: Italy\nCapital: Rome\n\n"
            + "Country: Chile\nCapital: Santiago\n\n"
            + "Country: Kenya\nCapital:",
            contexts.Single(c => c.EndsWith("Kenya\nCapital:")));
    }

    [Fact]
    public void Same_seed_same_prompts_other_seed_other_draw()
    {
        Assert.Equal(Contexts(), Contexts());
        Assert.NotEqual(Contexts(), Contexts(seed: 7));
    }

    [Fact]
    public void A_row_is_never_its_own_example_when_shots_come_from_the_scored_split()
    {
        // Shots from the test split itself: the harness draws n + 1 and drops the scored row.
        string yaml = Yaml.Replace("training_split: train", "fewshot_split: test").Replace("num_fewshot: 2", "num_fewshot: 4");
        var contexts = Contexts(test: Train, yaml: yaml);
        Assert.Equal(5, contexts.Count);
        foreach (var c in contexts)
        {
            string own = c[(c.LastIndexOf("Country: ", StringComparison.Ordinal) + 9)..c.LastIndexOf('\n')];
            Assert.Equal(1, c.Split($"Country: {own}\n").Length - 1);
            Assert.Equal(5, c.Split("Country: ").Length - 1);
        }
    }
}
