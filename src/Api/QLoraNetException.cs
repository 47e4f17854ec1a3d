namespace QLoraNet;

/// <summary>
/// The base of every error QLoraNet reports for bad input or an unusable environment. <see cref="Exception.Message"/>
/// is one line naming the file, key or value and what to do (the CLI prints the same line); the original exception,
/// when there is one, is <see cref="Exception.InnerException"/>.
/// </summary>
public abstract class QLoraNetException : Exception
{
    /// <summary>Creates the exception with its one-line message.</summary>
    protected QLoraNetException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>A fine-tuning config is invalid: an unknown key, a wrong type or value, a missing file it names
/// (e.g. <c>configs/x.yaml:12: unknown key 'lora.rank'; valid keys in 'lora': r, alpha, ...</c>).</summary>
public sealed class QLoraNetConfigException : QLoraNetException
{
    /// <summary>Creates the exception with its one-line message.</summary>
    public QLoraNetConfigException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>A model, adapter or output directory cannot be used: missing, of an unsupported family or format, malformed,
/// or an argument that does not fit it (a base format spelling, a generation setting).</summary>
public sealed class QLoraNetModelException : QLoraNetException
{
    /// <summary>Creates the exception with its one-line message.</summary>
    public QLoraNetModelException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>libtorch cannot run what was asked: it failed to load, or CUDA was asked and no GPU is visible (the message
/// says which libtorch was found and what to install).</summary>
public sealed class QLoraNetBackendException : QLoraNetException
{
    /// <summary>Creates the exception with its one-line message.</summary>
    public QLoraNetBackendException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>A fine-tuning run stopped on a non-finite loss; the message names the last good checkpoint and what to change.</summary>
public sealed class QLoraNetTrainingException : QLoraNetException
{
    /// <summary>Creates the exception with its one-line message.</summary>
    public QLoraNetTrainingException(string message, Exception? inner = null) : base(message, inner) { }
}
