namespace QLoraNet.Tests.Fuzz;

/// <summary>
/// The fuzz properties run with no other test collection beside them: <see cref="FuzzCase"/> judges a runaway by
/// the process's allocated bytes (GC.GetTotalAllocatedBytes, every thread: a reader may hand work to other threads),
/// and a test of another collection allocating at the same time was counted as the reader's (a YAML case once
/// "allocated 685 MiB" in CI and passed alone
/// with the same seed).
/// </summary>
[CollectionDefinition("fuzz", DisableParallelization = true)]
public sealed class FuzzCollection;
