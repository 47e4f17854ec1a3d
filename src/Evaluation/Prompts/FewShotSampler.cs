namespace QLoraNet.Evaluation.Prompts;

/// <summary>
/// Draws few-shot examples like the harness's samplers (lm_eval/api/samplers.py): <c>default</c> draws n distinct rows
/// at random from the few-shot split with one generator per task, seeded once (default seed 1234) and advanced row
/// by row in evaluation order; when the few-shot split is the scored split it draws n + 1 and drops the row being
/// scored. <c>first_n</c> takes the first n rows (MMLU's dev examples in order). The generator is our own
/// (SplitMix64 + partial Fisher-Yates), not Python's Mersenne Twister: the draw is reproducible here, not the same
/// rows Python would pick.
/// </summary>
public sealed class FewShotSampler(IReadOnlyList<Doc> pool, string sampler, ulong seed)
{
    ulong state = seed;

    public IReadOnlyList<Doc> Sample(int n, Doc? exclude)
    {
        if (n == 0) return [];
        if (sampler == "first_n")
        {
            var candidates = exclude is null ? pool : pool.Where(d => !Same(d, exclude)).ToList();
            if (n > candidates.Count) throw new TaskException($"{n} few-shot examples asked, the few-shot split has {candidates.Count}");
            return candidates.Take(n).ToList();
        }
        int draw = exclude is null ? n : n + 1;
        if (draw > pool.Count) throw new TaskException($"{n} few-shot examples asked, the few-shot split has {pool.Count} rows");
        var index = Enumerable.Range(0, pool.Count).ToArray();
        for (int i = 0; i < draw; i++)
        {
            int j = i + (int)Below((ulong)(pool.Count - i));
            (index[i], index[j]) = (index[j], index[i]);
        }
        var drawn = index.Take(draw).Select(i => pool[i]);
        if (exclude != null) drawn = drawn.Where(d => !Same(d, exclude));
        return drawn.Take(n).ToList();
    }

    static bool Same(Doc a, Doc b) => ReferenceEquals(a, b) || PythonValues.PyEquals(a.Fields, b.Fields);

    /// <summary>Uniform in [0, bound) by rejection, from SplitMix64 (Steele et al. 2014).</summary>
    ulong Below(ulong bound)
    {
        ulong limit = ulong.MaxValue - ulong.MaxValue % bound;
        while (true)
        {
            state += 0x9E3779B97F4A7C15UL;
            ulong z = state;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            if (z < limit) return z % bound;
        }
    }
}
