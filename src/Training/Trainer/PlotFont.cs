using ScottPlot;
using SkiaSharp;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// The font every plot of a run uses: DejaVu Sans, embedded in this assembly (Fonts/LICENSE-DejaVu.txt), so that a
/// headless server with no installed font still gets labelled plots. (SkiaSharp's Linux build without fontconfig
/// looks only in /usr/share/fonts; with nothing there ScottPlot draws no text at all.) ScottPlot resolves font
/// names only through its process-wide resolver list, so <see cref="Name"/> is added to it once, idempotently and
/// thread-safely; the resolver answers only for that name, so nothing else in the process changes.
/// </summary>
public static class PlotFont
{
    /// <summary>The family name plots ask for; no installed font carries it.</summary>
    public const string Name = "QLoraNet DejaVu Sans";

    const string Resource = "QLoraNet.Training.Fonts.DejaVuSans.ttf";

    static readonly Lazy<bool> Registered = new(() =>
    {
        Fonts.FontResolvers.Insert(0, new EmbeddedFontResolver(ReadFont()));
        return true;
    }, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Makes <see cref="Name"/> resolvable (once per process) and returns it.</summary>
    public static string Ensure() => Registered.Value ? Name : Name;

    /// <summary>The TTF bytes of the embedded font.</summary>
    public static byte[] ReadFont()
    {
        using var stream = typeof(PlotFont).Assembly.GetManifestResourceStream(Resource)
            ?? throw new InvalidOperationException($"embedded font {Resource} is missing from {typeof(PlotFont).Assembly.GetName().Name}");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    sealed class EmbeddedFontResolver(byte[] ttf) : IFontResolver
    {
        public SKTypeface? CreateTypeface(string fontName, FontWeight weight, FontSlant slant, FontSpacing spacing) =>
            fontName == Name ? SKTypeface.FromData(SKData.CreateCopy(ttf)) : null;

        public SKTypeface? CreateTypeface(string fontName, bool bold, bool italic) =>
            CreateTypeface(fontName, FontWeight.Normal, FontSlant.Upright, FontSpacing.Normal);
    }
}
