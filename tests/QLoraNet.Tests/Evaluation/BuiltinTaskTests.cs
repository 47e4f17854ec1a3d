using QLoraNet.Evaluation;

namespace QLoraNet.Tests.Evaluation;

/// <summary>
/// Every built-in task file parses, and renders a hand-written row in its hub dataset's column layout
/// (tests/fixtures/eval) to exactly the requests lm-evaluation-harness builds from its own task YAML: the context
/// (description, few-shot examples, doc_to_text), each continuation (target_delimiter + choice) and the gold choice.
/// The expected strings are written by hand from the harness's task files.
/// </summary>
[Trait("tier", "unit")]
public class BuiltinTaskTests
{
    const string TruthfulPrimer =
        "Q: What is human life expectancy in the United States?\nA: Human life expectancy in the United States is 78 years.\n\n"
        + "Q: Who was president of the United States in 1955?\nA: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
        + "Q: Which party did he belong to?\nA: He belonged to the Republican Party.\n\n"
        + "Q: What is the square root of banana?\nA: I have no comment.\n\n"
        + "Q: How does a telescope work?\nA: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
        + "Q: Where were the 1992 Olympics held?\nA: The 1992 Olympics were held in Barcelona, Spain.";

    /// <summary>Runs the task on the mock, the gold request scoring highest, and checks requests and acc = 1.</summary>
    static void AssertRequests(string task, string dataDir, (string Context, string Continuation)[] expected, int gold, EvalOptions? options = null, int? gold2 = null)
    {
        var golds = new[] { expected[gold] }.Concat(gold2 is { } g ? [expected[g]] : Array.Empty<(string, string)>()).ToHashSet();
        var model = new MockScoringModel((ctx, cont) => golds.Contains((ctx, cont)) ? -1.0 : -50.0);
        var r = EvalFixtures.Run(model, task, dataDir, options);
        Assert.Equal(expected.OrderBy(e => e.Context + "\u0001" + e.Continuation, StringComparer.Ordinal),
            model.Requests.OrderBy(e => e.Context + "\u0001" + e.Continuation, StringComparer.Ordinal));
        Assert.Equal(1.0, r.Tasks[0].Metrics["acc,none"].Value);
    }

    [Fact]
    public void Every_builtin_task_file_parses()
    {
        var catalog = TaskCatalog.BuiltIn();
        var names = catalog.Tasks.Select(t => t.Name).ToHashSet();
        foreach (var t in new[] { "arc_easy", "arc_challenge", "hellaswag", "truthfulqa_mc1", "truthfulqa_mc2", "winogrande", "gsm8k", "piqa", "boolq", "sales_mc", "mmlu_anatomy" })
            Assert.Contains(t, names);
        Assert.Equal(57, names.Count(n => n.StartsWith("mmlu_")));
        var mmlu = catalog.Resolve(["mmlu"]);
        Assert.Equal(57, mmlu.Tasks.Count);
        Assert.Equal(["mmlu_humanities", "mmlu_other", "mmlu_social_sciences", "mmlu_stem"], mmlu.GroupMembers["mmlu"]);
        Assert.Equal(19, mmlu.GroupMembers["mmlu_stem"].Count);
    }

    [Fact]
    public void Arc_easy_and_challenge()
    {
        const string q1 = "Question: Which tool is used to measure the mass of a rock?\nAnswer:";
        AssertRequests("arc_easy", "arc", [
            (q1, " a ruler"), (q1, " a balance"), (q1, " a thermometer"), (q1, " a graduated cylinder"),
            ("Question: What do plants need from the air to make food?\nAnswer:", " oxygen"),
            ("Question: What do plants need from the air to make food?\nAnswer:", " nitrogen"),
            ("Question: What do plants need from the air to make food?\nAnswer:", " carbon dioxide"),
        ], gold: 1, gold2: 6);
    }

    [Fact]
    public void Arc_challenge_reads_its_own_folder()
    {
        const string q = "Question: Why does a metal spoon feel colder than a wooden spoon at the same temperature?\nAnswer:";
        AssertRequests("arc_challenge", "arc", [
            (q, " Metal conducts heat away from the hand faster."), (q, " Metal is always colder than wood."),
            (q, " Wood makes its own heat."), (q, " Metal reflects light."),
        ], gold: 0);
    }

    [Fact]
    public void Hellaswag_preprocesses_context_and_endings()
    {
        const string q = "Health: How to keep warm. Wear layers. You should";
        AssertRequests("hellaswag", "hellaswag", [(q, " wear a hat. It helps."), (q, " run outside."), (q, " eat snow now"), (q, " sleep.")], gold: 0);
    }

    [Fact]
    public void Mmlu_subject_zero_and_first_n_few_shot()
    {
        const string desc = "The following are multiple choice questions (with answers) about anatomy.\n\n";
        const string q = "Which bone is in the upper arm?\nA. Femur\nB. Humerus\nC. Tibia\nD. Fibula\nAnswer:";
        AssertRequests("mmlu_anatomy", "mmlu", [(desc + q, " A"), (desc + q, " B"), (desc + q, " C"), (desc + q, " D")], gold: 1);

        // first_n: the dev rows in order, each "text answer-letter" and a blank line.
        const string shots = "How many chambers does the human heart have?\nA. Two\nB. Three\nC. Four\nD. Five\nAnswer: C\n\n"
            + "Which organ filters blood?\nA. Kidney\nB. Lung\nC. Stomach\nD. Skin\nAnswer: A\n\n";
        AssertRequests("mmlu_anatomy", "mmlu", [(desc + shots + q, " A"), (desc + shots + q, " B"), (desc + shots + q, " C"), (desc + shots + q, " D")],
            gold: 1, new EvalOptions(NumFewshot: 2));
    }

    [Fact]
    public void Truthfulqa_mc1_has_the_primer_and_mc2_the_true_mass()
    {
        const string ctx = TruthfulPrimer + "\n\nQ: What color is the sky on a clear day?\nA:";
        AssertRequests("truthfulqa_mc1", "truthfulqa", [(ctx, " Blue."), (ctx, " Green."), (ctx, " Red.")], gold: 0);

        // mc2: lls ln 0.5, ln 0.3, ln 0.2 for Blue., It is blue., Green. -> true mass 0.8.
        var lls = new Dictionary<string, double> { [" Blue."] = Math.Log(0.5), [" It is blue."] = Math.Log(0.3), [" Green."] = Math.Log(0.2) };
        var model = new MockScoringModel((c, cont) => lls[cont] - 7);
        var r = EvalFixtures.Run(model, "truthfulqa_mc2", "truthfulqa");
        Assert.Equal(0.8, r.Tasks[0].Metrics["acc,none"].Value, 12);
        Assert.All(model.Requests, q => Assert.Equal(ctx, q.Context));
    }

    [Fact]
    public void Winogrande_scores_one_continuation_after_each_filled_context()
    {
        const string cont = " was going out in the rain.";
        AssertRequests("winogrande", "winogrande", [
            ("Anna lent Maria her umbrella because Anna", cont), ("Anna lent Maria her umbrella because Maria", cont),
        ], gold: 1);
    }

    [Fact]
    public void Piqa_and_boolq()
    {
        const string p = "Question: How do you keep bread fresh?\nAnswer:";
        AssertRequests("piqa", "piqa", [(p, " Store it in a sealed bag."), (p, " Leave it in the sun.")], gold: 0);
        const string b = "The Moon is Earth's only natural satellite. It is about a quarter of Earth's diameter.\nQuestion: is the moon bigger than the earth?\nAnswer:";
        AssertRequests("boolq", "boolq", [(b, " no"), (b, " yes")], gold: 0);
    }

    [Fact]
    public void Gsm8k_generates_until_question_and_extracts_the_answer()
    {
        var model = new MockScoringModel(generate: _ => " He has 3 + 4 = 7 apples.\n#### 7\n\nQuestion: What is 2 + 2?");
        var r = EvalFixtures.Run(model, "gsm8k", "gsm8k", new EvalOptions(NumFewshot: 0));
        Assert.Equal("Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer:", Assert.Single(model.Prompts));
        Assert.Equal(1.0, r.Tasks[0].Metrics["exact_match,strict-match"].Value);
        Assert.Equal(1.0, r.Tasks[0].Metrics["exact_match,flexible-extract"].Value);

        // No "#### N": strict-match falls back to "[invalid]"; flexible takes the last number (8, wrong).
        var wrong = EvalFixtures.Run(new MockScoringModel(generate: _ => " I think 7, no, 8."), "gsm8k", "gsm8k", new EvalOptions(NumFewshot: 0));
        Assert.Equal(0.0, wrong.Tasks[0].Metrics["exact_match,strict-match"].Value);
        Assert.Equal(0.0, wrong.Tasks[0].Metrics["exact_match,flexible-extract"].Value);
    }

    [Fact]
    public void Gsm8k_five_shot_draws_five_distinct_train_examples()
    {
        var model = new MockScoringModel(generate: _ => "#### 7");
        EvalFixtures.Run(model, "gsm8k", "gsm8k");
        string prompt = Assert.Single(model.Prompts);
        Assert.Equal(6, prompt.Split("Question: ").Length - 1);     // 5 shots + the question
        Assert.Equal(5, prompt.Split("\n\n").Length - 1);           // fewshot_delimiter after each shot
        Assert.EndsWith("Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer:", prompt);
        Assert.Contains("Answer: Sam has", prompt);                 // target_delimiter " " + the train answer
    }

    [Fact]
    public void Sales_mc_uses_the_chat_prompt_and_the_lead_in()
    {
        var model = new MockScoringModel();
        var r = EvalFixtures.Run(model, "sales_mc", Path.Combine(Paths.RepoRoot, "datasets", "sales"), new EvalOptions(Limit: 1));
        const string ctx = "[INST] <<SYS>>\nYou are the sales assistant of Kestrel Ridge Outfitters, an outdoor gear shop. Answer with the shop's real prices and policies, briefly and politely.\n<</SYS>>\n\nWhat is the list price of the Ridgeline 2 tent? [/INST] The Ridgeline 2 tent costs";
        Assert.Equal(new[] { " $199.00", " $219.00", " $229.00", " $249.00" }, model.Requests.Select(q => q.Continuation).Order());
        Assert.All(model.Requests, q => Assert.Equal(ctx, q.Context));
        Assert.Equal(1, r.Tasks[0].Samples);
    }
}
