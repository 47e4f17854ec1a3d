using QLoraNet.Evaluation;

namespace QLoraNet.Tests.Evaluation;

/// <summary>The issue's bad inputs: each is one line naming file:line (of the task file) or the row (data file:line),
/// raised before the model scores anything.</summary>
[Trait("tier", "unit")]
public class BadInputTests
{
    const string Good = """
        task: t
        dataset_path: DATA_DIR
        test_split: test
        output_type: multiple_choice
        doc_to_text: "Q: {{q}}\nA:"
        doc_to_target: gold
        doc_to_choice: "{{choices}}"
        """;

    const string Row = """{"q": "Is it?", "choices": ["yes", "no"], "gold": 0}""";

    static string Error(string yaml, string rows = Row, string dataName = "test.jsonl")
    {
        using var dir = Paths.Temp();
        string task = EvalFixtures.WriteTask(dir, yaml, rows, dataName);
        var e = Assert.Throws<TaskException>(() =>
            EvalRunner.Run(new MockScoringModel(), TaskCatalog.BuiltIn().Resolve([task]), new EvalOptions()));
        Assert.DoesNotContain('\n', e.Message);
        return e.Message.Replace(dir.Path, "DIR");
    }

    [Fact]
    public void The_good_file_runs() // so each case below fails for its own reason
    {
        using var dir = Paths.Temp();
        string task = EvalFixtures.WriteTask(dir, Good, Row);
        Assert.Equal(1, EvalRunner.Run(new MockScoringModel(), TaskCatalog.BuiltIn().Resolve([task]), new EvalOptions()).Tasks[0].Samples);
    }

    [Fact]
    public void Unknown_key_names_the_line_and_the_valid_keys()
    {
        string m = Error(Good.Replace("doc_to_target: gold", "doc_to_targt: gold\ndoc_to_target: gold"));
        Assert.StartsWith("DIR/task.yaml:6: unknown key 'doc_to_targt'; valid keys: ", m);
        Assert.Contains("doc_to_choice", m);
    }

    [Fact]
    public void Harness_keys_we_do_not_implement_are_named()
    {
        Assert.StartsWith("DIR/task.yaml:8: 'use_prompt' is lm-evaluation-harness's but not implemented here", Error(Good + "\nuse_prompt: p3:x"));
        Assert.Contains("runs Python", Error(Good.Replace("doc_to_target: gold", "doc_to_target: !function utils.target")));
        Assert.Contains("name a built-in preprocessor instead (hellaswag, winogrande)", Error(Good + "\nprocess_docs: !function utils.process_docs"));
    }

    [Fact]
    public void Unknown_output_type()
    {
        Assert.Equal("DIR/task.yaml:4: output_type 'ranking' is not supported; choose one of multiple_choice, generate_until, loglikelihood",
            Error(Good.Replace("output_type: multiple_choice", "output_type: ranking")));
    }

    [Fact]
    public void Template_naming_a_missing_field_names_the_row()
    {
        string m = Error(Good.Replace("{{q}}", "{{question}}"));
        Assert.Equal("DIR/task.yaml:5 doc_to_text: field 'question' is not in row DIR/test.jsonl:1; its fields are q, choices, gold", m);
    }

    [Fact]
    public void Template_syntax_we_do_not_implement_is_refused_by_name()
    {
        Assert.Contains("template tag '{% for %}' is not supported", Error(Good.Replace("Q: {{q}}", "{% for c in choices %}{{c}}{% endfor %}")));
        Assert.Contains("filter 'title' is not implemented; filters: trim, lower", Error(Good.Replace("{{q}}", "{{q | title}}")));
        Assert.Contains("method '.format()' is not implemented", Error(Good.Replace("{{q}}", "{{q.format(1)}}")));
    }

    [Fact]
    public void Choice_lists_of_length_zero_or_one_name_the_row()
    {
        Assert.Equal("DIR/task.yaml: task 't' doc_to_choice gives 1 choice(s); a multiple-choice row needs at least 2 (row DIR/test.jsonl:2)",
            Error(Good, Row + "\n" + """{"q": "Only one?", "choices": ["yes"], "gold": 0}"""));
        Assert.Contains("gives 0 choice(s)", Error(Good, """{"q": "None?", "choices": [], "gold": 0}"""));
    }

    [Fact]
    public void Gold_index_out_of_range_names_the_row()
    {
        Assert.Equal("DIR/task.yaml: task 't' gold index 2 is out of range for 2 choices (row DIR/test.jsonl:1)",
            Error(Good, """{"q": "Is it?", "choices": ["yes", "no"], "gold": 2}"""));
        Assert.Contains("target 'maybe' is not one of the choices ['yes', 'no'] (row DIR/test.jsonl:1)",
            Error(Good, """{"q": "Is it?", "choices": ["yes", "no"], "gold": "maybe"}"""));
    }

    [Fact]
    public void Unreadable_data_formats_are_named()
    {
        string yaml = Good.Replace("dataset_path: DATA_DIR", "dataset_kwargs:\n  data_files:\n    test: DATA_DIR/test.xlsx");
        Assert.Equal("DIR/test.xlsx: cannot read '.xlsx' files; task data must be .jsonl, .json, .csv, .parquet", Error(yaml, "PK\u0003\u0004", "test.xlsx"));
        Assert.StartsWith("DIR/test-00000-of-00001.parquet: not a readable Parquet file", Error(Good, "this is not parquet", "test-00000-of-00001.parquet"));
        Assert.StartsWith("DIR/test.jsonl:2: not valid JSON", Error(Good, Row + "\n{\"q\": "));
    }

    /// <summary>The bounded readers' refusals (not UTF-8, too large) arrive as TaskException like every other bad task
    /// input, naming the file and line; an unreadable sibling of a group file is skipped as an unparsable one is.</summary>
    [Fact]
    public void Files_the_bounded_readers_refuse_are_task_errors_naming_the_file()
    {
        using var dir = Paths.Temp();
        string task = EvalFixtures.WriteTask(dir, Good);
        File.WriteAllBytes(dir["test.jsonl"], [.. System.Text.Encoding.UTF8.GetBytes(Row + "\n"), 0xFF, 0xFE, (byte)'\n']);
        var data = Assert.Throws<TaskException>(() =>
            EvalRunner.Run(new MockScoringModel(), TaskCatalog.BuiltIn().Resolve([task]), new EvalOptions()));
        Assert.StartsWith($"{dir["test.jsonl"]}:2: not valid UTF-8", data.Message);

        File.WriteAllBytes(dir["bad.yaml"], [.. System.Text.Encoding.UTF8.GetBytes("task: x\n"), 0xC3, 0x28]);
        var yaml = Assert.Throws<TaskException>(() => TaskCatalog.BuiltIn().Resolve([dir["bad.yaml"]]));
        Assert.StartsWith($"{dir["bad.yaml"]}:2: not valid UTF-8", yaml.Message);

        using (var f = File.Create(dir["big.yaml"])) f.SetLength((1 << 20) + 1);
        var big = Assert.Throws<TaskException>(() => TaskCatalog.BuiltIn().Resolve([dir["big.yaml"]]));
        Assert.Equal($"{dir["big.yaml"]}: {(1 << 20) + 1} bytes is more than the {1 << 20}-byte limit for a task file", big.Message);

        // A group file beside them: its siblings that cannot be read are skipped, its member task still resolves.
        File.WriteAllText(dir["group.yaml"], "group: g\ntask: [t]\n");
        Assert.Equal(["t"], TaskCatalog.BuiltIn().Resolve([dir["group.yaml"]]).Tasks.Select(t => t.Name));
    }

    /// <summary>Found by the task file fuzz target: a task file nested a hundred thousand levels deep overflowed the
    /// stack of YamlDotNet's recursive node builder (the process died); the bounded loader refuses it first. A data row
    /// repeating a key keeps the last value, as Python's json does; a value is quoted escaped and clipped.</summary>
    [Fact]
    public void Deep_task_files_repeated_keys_and_long_values_end_cleanly()
    {
        Assert.Equal("DIR/task.yaml:8: YAML nested more than 64 levels deep; a config or task file needs a handful",
            Error(Good + "\nmetadata: " + new string('[', 100_000)));
        Assert.StartsWith("DIR/task.yaml:4: output_type '" + new string('x', 100) + "... (5000 characters)' is not supported",
            Error(Good.Replace("output_type: multiple_choice", "output_type: " + new string('x', 5000))));

        // The template parser recursed once per parenthesis: the same fuzz target overflowed the stack with a few thousand (and an expression of more than 2000 tokens is refused whole).
        Assert.Contains("nested more than 64 levels deep",
            Error(Good.Replace("doc_to_target: gold", "doc_to_target: \"{{" + new string('(', 100) + "gold" + new string(')', 100) + "}}\"")));

        using var dir = Paths.Temp();
        File.WriteAllText(dir["test.jsonl"], """{"q": "first", "q": "last", "gold": 0}""" + "\n");
        Assert.Equal("last", QLoraNet.Evaluation.Data.DocFiles.Read(dir["test.jsonl"])[0]["q"]);

    }

    [Fact]
    public async Task A_binary_parquet_column_names_the_file_and_row()
    {
        using var dir = Paths.Temp();
        await Parquet.Serialization.ParquetSerializer.SerializeAsync(new[] { new BinaryRow { q = "Is it?", blob = [1, 2] } }, dir["test.parquet"]);
        var e = Assert.Throws<TaskException>(() => QLoraNet.Evaluation.Data.DocFiles.Read(dir["test.parquet"]));
        Assert.Equal($"{dir["test.parquet"]} row 0: a binary column; task data must be text, numbers, booleans, lists or structs", e.Message);
    }

    public sealed class BinaryRow { public string q { get; set; } = ""; public byte[] blob { get; set; } = []; }

    [Fact]
    public void Missing_data_says_how_to_give_it()
    {
        var e = Assert.Throws<TaskException>(() => EvalRunner.Run(new MockScoringModel(), TaskCatalog.BuiltIn().Resolve(["arc_easy"]), new EvalOptions()));
        Assert.Equal("task 'arc_easy' reads its data from 'allenai/ai2_arc', which is not a local file or directory; pass --task-data arc_easy=DIR with a local copy of the hub dataset allenai/ai2_arc (huggingface-cli download allenai/ai2_arc --repo-type dataset --local-dir DIR)", e.Message);
        var unknown = Assert.Throws<TaskException>(() => TaskCatalog.BuiltIn().Resolve(["arc_eazy"]));
        Assert.StartsWith("unknown task 'arc_eazy'; built-in tasks and groups: ", unknown.Message);
    }
}
