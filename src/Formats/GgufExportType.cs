namespace QLoraNet.Formats;

/// <summary>The <c>--type</c> of a GGUF export: the type of the big 2-D weights.</summary>
public enum GgufExportType { F16, Q8_0, Q4_0 }
