using Parquet.Serialization;
using QLoraNet.Evaluation;
using QLoraNet.Evaluation.Data;

namespace QLoraNet.Tests.Evaluation;

/// <summary>Parquet as the hub serves ARC (nested struct of lists) is read with Parquet.Net into the same rows the
/// JSONL fixture gives, so a task reads the user's hub download unchanged; CSV infers integer columns.</summary>
[Trait("tier", "unit")]
public class ParquetDataTests
{
    public sealed class Choices { public List<string> text { get; set; } = []; public List<string> label { get; set; } = []; }
    public sealed class ArcRow { public string id { get; set; } = ""; public string question { get; set; } = ""; public Choices choices { get; set; } = new(); public string answerKey { get; set; } = ""; }

    [Fact]
    public async Task Hub_layout_parquet_reads_like_the_jsonl_fixture()
    {
        var jsonl = DocFiles.Read(EvalFixtures.Path_("arc/ARC-Easy/test.jsonl"));
        var rows = jsonl.Select(d => new ArcRow
        {
            id = (string)d["id"]!, question = (string)d["question"]!, answerKey = (string)d["answerKey"]!,
            choices = new Choices
            {
                text = ((IReadOnlyList<object?>)((IReadOnlyDictionary<string, object?>)d["choices"]!)["text"]!).Cast<string>().ToList(),
                label = ((IReadOnlyList<object?>)((IReadOnlyDictionary<string, object?>)d["choices"]!)["label"]!).Cast<string>().ToList(),
            },
        }).ToList();
        using var dir = Paths.Temp();
        Directory.CreateDirectory(dir["ARC-Easy"]);
        string file = Path.Combine(dir["ARC-Easy"], "test-00000-of-00001.parquet");
        await ParquetSerializer.SerializeAsync(rows, file);

        var parquet = DocFiles.Read(file);
        Assert.Equal(jsonl.Count, parquet.Count);
        for (int i = 0; i < jsonl.Count; i++)
            Assert.True(PythonValues.PyEquals(jsonl[i].Fields, parquet[i].Fields), $"row {i}: {PythonValues.Repr(parquet[i].Fields)}");
        Assert.Equal($"{file} row 1", parquet[1].Origin);

        // The built-in arc_easy task reads the folder as the hub lays it out.
        var fromJsonl = new MockScoringModel();
        var fromParquet = new MockScoringModel();
        var selection = TaskCatalog.BuiltIn().Resolve(["arc_easy"]);
        EvalRunner.Run(fromJsonl, selection, new EvalOptions(), new Dictionary<string, string> { ["arc_easy"] = EvalFixtures.Path_("arc") });
        EvalRunner.Run(fromParquet, selection, new EvalOptions(), new Dictionary<string, string> { ["ai2_arc"] = dir.Path });
        Assert.Equal(fromJsonl.Requests, fromParquet.Requests);
    }

    [Fact]
    public void Csv_columns_of_integers_are_integers()
    {
        using var dir = Paths.Temp();
        File.WriteAllText(dir["validation.csv"], "passage,question,label\n\"A, b\",is it,1\nC,is it not,0\n");
        var docs = DocFiles.Read(dir["validation.csv"]);
        Assert.Equal(1L, docs[0]["label"]);
        Assert.Equal("A, b", docs[0]["passage"]);
        Assert.Equal($"{dir["validation.csv"]}:3", docs[1].Origin);
    }
}
