using System.Globalization;

namespace QLoraNet.Quant;

/// <summary>
/// Python's repr() of a float (what json.dumps writes for `nested_offset`): the shortest digits that round-trip,
/// positional for decimal exponents -4..15 ("0.0123", "1.0"), scientific otherwise ("1e-05", "1.5e+16").
/// Writing it the same way keeps a re-saved quant_state byte-identical to the one bitsandbytes wrote.
/// </summary>
static class PythonFloat
{
    public static string Repr(double value)
    {
        if (double.IsNaN(value)) return "NaN";
        if (double.IsInfinity(value)) return value > 0 ? "Infinity" : "-Infinity";
        if (value == 0) return double.IsNegative(value) ? "-0.0" : "0.0";

        // .NET's "R" is also the shortest round-trip string; take its digits and decimal exponent apart.
        string shortest = Math.Abs(value).ToString("R", CultureInfo.InvariantCulture);
        var (digits, exponent) = Decompose(shortest);
        string sign = value < 0 ? "-" : "";

        if (exponent < -4 || exponent >= 16)
        {
            string mantissa = digits.Length == 1 ? digits : digits[0] + "." + digits[1..];
            return $"{sign}{mantissa}e{(exponent < 0 ? "-" : "+")}{Math.Abs(exponent):00}";
        }
        if (exponent < 0)
            return $"{sign}0.{new string('0', -exponent - 1)}{digits}";
        if (digits.Length <= exponent + 1)
            return $"{sign}{digits}{new string('0', exponent + 1 - digits.Length)}.0";
        return $"{sign}{digits[..(exponent + 1)]}.{digits[(exponent + 1)..]}";
    }

    /// <summary>"1.25E-05" or "0.0125" or "125" -> significant digits "125" and the decimal exponent of the first.</summary>
    static (string Digits, int Exponent) Decompose(string s)
    {
        int exponentPart = 0;
        int e = s.IndexOfAny(['E', 'e']);
        if (e >= 0)
        {
            exponentPart = int.Parse(s[(e + 1)..], CultureInfo.InvariantCulture);
            s = s[..e];
        }
        int dot = s.IndexOf('.');
        string intPart = dot < 0 ? s : s[..dot];
        string fracPart = dot < 0 ? "" : s[(dot + 1)..];
        string all = intPart + fracPart;
        int firstNonZero = all.IndexOf(all.First(c => c != '0'));
        string digits = all[firstNonZero..].TrimEnd('0');
        int exponent = intPart.Length - 1 - firstNonZero + exponentPart;
        return (digits.Length == 0 ? "0" : digits, exponent);
    }
}
