using QLoraNet.Native;
using QLoraNet.Training.Config;

namespace QLoraNet;

/// <summary>Maps what the layers throw for bad input to the facade's documented exception types, keeping the one-line message.</summary>
static class Errors
{
    public static T Guard<T>(Func<T> work)
    {
        try { return work(); }
        catch (Exception e) when (Translate(e) is { } mapped) { throw mapped; }
    }

    public static Exception? Translate(Exception e) => e switch
    {
        QLoraNetException or OperationCanceledException => null,
        ConfigException => new QLoraNetConfigException(e.Message, e),
        LibTorchLoadException => new QLoraNetBackendException(e.Message, e),
        TypeInitializationException { InnerException: { } inner } => Translate(inner),
        InvalidOperationException when e.Message.Contains("CUDA", StringComparison.Ordinal) => new QLoraNetBackendException(e.Message, e),
        IOException or InvalidDataException or NotSupportedException or FormatException or ArgumentException or UnauthorizedAccessException
            => new QLoraNetModelException(OneLine(e.Message), e),
        _ => null,
    };

    static string OneLine(string s) => string.Join(" ", s.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Trim()));
}
