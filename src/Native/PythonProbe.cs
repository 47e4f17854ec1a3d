using System.Diagnostics;

namespace QLoraNet.Native;

/// <summary>
/// Asks the python3 on PATH where torch is installed, without importing it (importlib's find_spec reads no native
/// library, ~50 ms instead of the seconds an `import torch` of a CUDA build takes). The last resort of discovery.
/// </summary>
public static class PythonProbe
{
    const string Script = "import importlib.util as u, os; s = u.find_spec('torch'); print(os.path.join(os.path.dirname(s.origin), 'lib') if s and s.origin else '')";

    /// <summary>torch/lib of python3's torch, or null when there is no python3, no torch, or no answer within <paramref name="timeout"/>.</summary>
    public static string? TorchLib(TimeSpan timeout)
    {
        try
        {
            var start = new ProcessStartInfo("python3", ["-c", Script])
            {
                RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false,
            };
            using var process = Process.Start(start);
            if (process is null) return null;
            process.StandardInput.Close();
            var output = process.StandardOutput.ReadToEndAsync();
            _ = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(timeout))
            {
                try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                return null;
            }
            string dir = output.Result.Trim();
            return process.ExitCode == 0 && dir.Length > 0 ? dir : null;
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException or IOException)
        {
            return null; // no python3 on PATH
        }
    }
}
