using System.Globalization;

namespace QLoraNet.Peft;

/// <summary>How many of a model's parameters train, counted as peft's `print_trainable_parameters` reports them.</summary>
/// <param name="Trainable">elements of parameters with requires_grad.</param>
/// <param name="Total">all logical weight elements: a frozen quantized linear counts out·in, not its packed bytes.</param>
public sealed record ParameterCount(long Trainable, long Total)
{
    public double Percent => Total == 0 ? 0 : 100.0 * Trainable / Total;

    /// <summary>"trainable 4.2M of 6.7B (0.06%)".</summary>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"trainable {Human(Trainable)} of {Human(Total)} ({Percent:0.00}%)");

    /// <summary>A count with one decimal and a K/M/B suffix: 4_194_304 -> "4.2M".</summary>
    public static string Human(long n)
    {
        (double scale, string suffix) = n switch
        {
            >= 1_000_000_000 => (1e9, "B"),
            >= 1_000_000 => (1e6, "M"),
            >= 1_000 => (1e3, "K"),
            _ => (1, ""),
        };
        return suffix == "" ? n.ToString(CultureInfo.InvariantCulture)
            : (n / scale).ToString("0.0", CultureInfo.InvariantCulture) + suffix;
    }
}
