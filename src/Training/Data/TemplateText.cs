namespace QLoraNet.Training.Data;

/// <summary>Text operations of the Jinja templates that the native renderings reproduce.</summary>
public static class TemplateText
{
    /// <summary>
    /// Jinja's <c>trim</c> filter (Python's <c>str.strip()</c>): removes leading and trailing whitespace as Python
    /// defines it, which also counts the separators U+001C..U+001F that .NET does not.
    /// </summary>
    public static string Trim(string s)
    {
        int start = 0, end = s.Length;
        while (start < end && IsPythonSpace(s[start])) start++;
        while (end > start && IsPythonSpace(s[end - 1])) end--;
        return s[start..end];
    }

    static bool IsPythonSpace(char c) => char.IsWhiteSpace(c) || c is >= '\u001C' and <= '\u001F';
}
