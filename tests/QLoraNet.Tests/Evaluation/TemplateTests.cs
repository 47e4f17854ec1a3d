using QLoraNet.Evaluation;
using QLoraNet.Evaluation.Templates;

namespace QLoraNet.Tests.Evaluation;

/// <summary>The template engine renders what Jinja renders in the harness (Python's str of values) for the
/// expressions task files use.</summary>
[Trait("tier", "unit")]
public class TemplateTests
{
    static readonly Doc Row = new(new Dictionary<string, object?>
    {
        ["question"] = "  What is 2+2?  ",
        ["choices"] = new Dictionary<string, object?> { ["text"] = new List<object?> { "three", "four" }, ["label"] = new List<object?> { "A", "B" } },
        ["answerKey"] = "B",
        ["answers"] = new List<object?> { "Four", "4" },
        ["n"] = 3L,
        ["x"] = 0.5,
        ["flag"] = true,
        ["sentence"] = "It's _ here",
    }, "row.jsonl:1");

    static object? Eval(string template) => Template.Parse(template, "t.yaml:1 doc_to_text").Evaluate(Row);
    static string Render(string template) => Template.Parse(template, "t.yaml:1 doc_to_text").Render(Row);

    [Theory]
    [InlineData("Q: {{question}}", "Q:   What is 2+2?  ")]
    [InlineData("{{question.strip()}}|{{ question | trim }}|{{question|lower|trim}}", "What is 2+2?|What is 2+2?|what is 2+2?")]
    [InlineData("{{answers[0]}} {{answers[-1]}} {{choices.text[1]}} {{choices['label'][0]}}", "Four 4 four A")]
    [InlineData("{{choices.label.index(answerKey)}}", "1")]
    [InlineData("{{n}} {{x}} {{flag}} {{n + 1}}", "3 0.5 True 4")]
    [InlineData("{{choices.text}}", "['three', 'four']")]
    [InlineData("{{[sentence, 'x']}}", "[\"It's _ here\", 'x']")]
    [InlineData("{% set p = 'A:\\n' %}{{p + question.strip()}}", "A:\nWhat is 2+2?")]
    [InlineData("{{ n ~ '!' }} {{ 'ab'[1:] }} {{ sentence.split('_')[0] | trim }}", "3! b It's")]
    [InlineData("a {{- ' b ' -}} c {# note #}", "a b c ")]
    [InlineData("{{ answers | join(', ') }} {{ answers | length }} {{ 'x y' | capitalize }}", "Four, 4 2 X y")]
    public void Renders_like_jinja_in_python(string template, string expected) => Assert.Equal(expected, Render(template));

    [Fact]
    public void A_single_expression_keeps_its_value()
    {
        Assert.Equal(new List<object?> { "three", "four" }, Eval("{{choices.text}}"));
        Assert.Equal(1L, Eval("{{choices.label.index(answerKey)}}"));
        Assert.Equal("1", Eval(" {{choices.label.index(answerKey)}}")?.ToString()?.Trim());
    }

    [Fact]
    public void Errors_name_the_template_and_the_row()
    {
        var e = Assert.Throws<TaskException>(() => Render("{{ answers[5] }}"));
        Assert.Equal("t.yaml:1 doc_to_text: index 5 is out of range for 'answers' of length 2 (row row.jsonl:1)", e.Message);
        e = Assert.Throws<TaskException>(() => Render("{{ choices.label.index('Z') }}"));
        Assert.Equal("t.yaml:1 doc_to_text: 'Z' is not in 'choices.label' ['A', 'B'] (row row.jsonl:1)", e.Message);
        e = Assert.Throws<TaskException>(() => Render("{{ question"));
        Assert.Contains("is never closed", e.Message);
        e = Assert.Throws<TaskException>(() => Render("{{ n + question }}"));
        Assert.Contains("cannot add a int and a str", e.Message);
    }
}
