using QLoraNet.Formats;

namespace QLoraNet.Tests.Formats;

[Trait("tier", "unit")]
public class GgufTypePolicyTests
{
    [Theory]
    [InlineData("blk.0.attn_norm.weight", new long[] { 256 }, GgufExportType.Q4_0, true, GgmlType.F32)]
    [InlineData("output_norm.weight", new long[] { 256 }, GgufExportType.F16, true, GgmlType.F32)]
    [InlineData("blk.0.attn_q.weight", new long[] { 256, 256 }, GgufExportType.F16, true, GgmlType.F16)]
    [InlineData("blk.0.attn_q.weight", new long[] { 256, 256 }, GgufExportType.Q8_0, true, GgmlType.Q8_0)]
    [InlineData("token_embd.weight", new long[] { 32000, 256 }, GgufExportType.Q8_0, false, GgmlType.Q8_0)]
    [InlineData("blk.0.attn_q.weight", new long[] { 256, 256 }, GgufExportType.Q4_0, true, GgmlType.Q4_0)]
    [InlineData("token_embd.weight", new long[] { 32000, 256 }, GgufExportType.Q4_0, true, GgmlType.Q4_0)]   // separate head
    [InlineData("token_embd.weight", new long[] { 32000, 256 }, GgufExportType.Q4_0, false, GgmlType.Q8_0)]  // tied: it is the head
    [InlineData("output.weight", new long[] { 32000, 256 }, GgufExportType.Q4_0, true, GgmlType.Q8_0)]
    public void Chooses_the_type_llama_cpp_tools_would(string name, long[] shape, GgufExportType type, bool hasOutput, GgmlType expected)
    {
        Assert.Equal(expected, GgufTypePolicy.Choose(name, shape, type, hasOutput, out var warning));
        Assert.Null(warning);
    }

    [Fact]
    public void Rows_that_are_not_whole_blocks_fall_back_to_f16_with_a_warning()
    {
        Assert.Equal(GgmlType.F16, GgufTypePolicy.Choose("blk.0.ffn_down.weight", new long[] { 256, 688 }, GgufExportType.Q4_0, true, out var warning));
        Assert.Equal("blk.0.ffn_down.weight: rows of 688 values are not a multiple of 32; written as f16 instead of q4_0", warning);
    }

    [Fact]
    public void File_types_are_llama_cpps_ftype_numbers()
    {
        Assert.Equal((1u, 7u, 2u), (GgufTypePolicy.FileType(GgufExportType.F16), GgufTypePolicy.FileType(GgufExportType.Q8_0), GgufTypePolicy.FileType(GgufExportType.Q4_0)));
    }
}
