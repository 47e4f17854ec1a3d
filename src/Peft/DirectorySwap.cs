namespace QLoraNet.Peft;

/// <summary>
/// Publishing a directory written completely elsewhere: the reader sees the old one or the new one, never a mix.
/// Directory.Move cannot overwrite, so an existing target is moved aside first and deleted after the swap.
/// </summary>
internal static class DirectorySwap
{
    public static void Replace(string staging, string target)
    {
        if (!Directory.Exists(target))
        {
            Directory.Move(staging, target);
            return;
        }
        string old = target + ".old-" + Guid.NewGuid().ToString("N")[..8];
        Directory.Move(target, old);
        Directory.Move(staging, target);
        Directory.Delete(old, recursive: true);
    }
}
