namespace QLoraNet.Native;

/// <summary>Where a libtorch came from, in the order discovery looks.</summary>
public enum LibTorchSource
{
    /// <summary>The QLORANET_LIBTORCH environment variable.</summary>
    Variable,
    /// <summary>A PyTorch install's torch/lib found in a virtual environment, conda or a site-packages directory.</summary>
    PythonInstall,
    /// <summary>torch/lib of the python3 on PATH, as python3 reports it (the last resort).</summary>
    Python,
    /// <summary>A libtorch download unpacked at a usual place (/usr/local/libtorch, /opt/libtorch).</summary>
    Download,
    /// <summary>A directory on LD_LIBRARY_PATH.</summary>
    LibraryPath,
    /// <summary>The CPU libtorch that ships with the application (the libtorch-cpu NuGet package).</summary>
    Bundled,
}

/// <summary>A directory that holds libtorch's shared libraries, and how it was found (<see cref="Origin"/>: the variable,
/// prefix or command that led there, for messages).</summary>
public sealed record LibTorchLocation(string Directory, LibTorchSource Source, string Origin);
