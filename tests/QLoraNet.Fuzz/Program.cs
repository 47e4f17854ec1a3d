using QLoraNet.Tests.Fuzz;
using SharpFuzz;

// AFL++ harness: `QLoraNet.Fuzz <reader>` reads one input per run from stdin (Fuzzer.OutOfProcess keeps the
// process alive between inputs and reports coverage of the instrumented QLoraNet assemblies). A clean one-line error
// is a normal outcome; any other exception is left to escape, which AFL++ records as a crash.
// `QLoraNet.Fuzz <reader> --seeds DIR` writes the reader's seed inputs into DIR (AFL++'s -i directory).
if (args.Length == 0)
{
    Console.Error.WriteLine("usage: QLoraNet.Fuzz <reader> [--seeds DIR]");
    return 2;
}
if (args.Length == 3 && args[1] == "--seeds")
{
    // Run before the assemblies are instrumented: instrumented code only works inside Fuzzer.OutOfProcess.Run.
    using var all = new FuzzTargets();
    Directory.CreateDirectory(args[2]);
    var seeds = all[args[0]].Seeds();
    for (int i = 0; i < seeds.Count; i++) File.WriteAllBytes(Path.Combine(args[2], $"seed{i}"), seeds[i]);
    return 0;
}
FuzzTargets? targets = null;
Fuzzer.OutOfProcess.Run(stream =>
{
    targets ??= new FuzzTargets();   // its setup runs instrumented code too, so inside Run
    var target = targets[args[0]];
    using (var file = File.Create(target.FileName)) stream.CopyTo(file);
    try
    {
        target.Run(target.FileName);
    }
    catch (Exception e) when (FuzzTargets.IsCleanError(e, out _))
    {
    }
});
return 0;
