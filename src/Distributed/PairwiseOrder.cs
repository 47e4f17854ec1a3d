namespace QLoraNet.Distributed;

/// <summary>
/// The one order in which data-parallel training adds partial sums, so that W ranks and one process add the same
/// numbers in the same way: a balanced binary tree over the terms in their given order, whose left part holds
/// ceil(n/2) of them (pairwise summation; Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., §4.2:
/// the error bound grows with log2 n rather than n). The training step adds its micro-batches' gradients and loss
/// sums in this order, and the loopback backend adds the ranks' buffers in it.
/// <para>
/// Why it makes data parallelism exact: floating-point addition is not associative, so two runs agree bit for bit
/// only when they add along the same tree. One process with accumulation W·A sums the tree over W·A micro-batches;
/// W ranks of A contiguous micro-batches each sum the subtrees over their blocks and then the tree over the ranks.
/// Both are the same tree whenever the ranks' blocks are subtrees of the whole step's tree: when W is a power of two
/// (the left part of 2^k·A terms is exactly its first half), or when A = 1 (blocks are single terms, and the tree over
/// the ranks is the tree over the terms). Up to three terms the tree is the sequential order, ((x0 + x1) + x2).
/// </para>
/// </summary>
public static class PairwiseOrder
{
    /// <summary>How many of <paramref name="count"/> terms the left subtree holds.</summary>
    public static int LeftCount(int count) => (count + 1) / 2;

    /// <summary>
    /// For adding terms as they arrive, with a stack of partial sums: after term i is pushed, pop two and push
    /// their sum (left + right) <c>result[i]</c> times. At most ceil(log2 n) + 1 partial sums are held at once.
    /// </summary>
    public static int[] MergesAfter(int count)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), count, "at least one term");
        var merges = new int[count];
        Visit(0, count);
        return merges;

        // Post-order: a node's merge follows its right subtree, which ends with its last term.
        void Visit(int lo, int hi)
        {
            if (hi - lo == 1) return;
            int mid = lo + LeftCount(hi - lo);
            Visit(lo, mid);
            Visit(mid, hi);
            merges[hi - 1]++;
        }
    }

    /// <summary>The sum of <paramref name="terms"/> (at least one) along the tree, <paramref name="add"/>(left, right) at each node.</summary>
    public static T Sum<T>(IReadOnlyList<T> terms, Func<T, T, T> add)
    {
        if (terms.Count == 0) throw new ArgumentException("at least one term", nameof(terms));
        return Node(0, terms.Count);

        T Node(int lo, int hi)
        {
            if (hi - lo == 1) return terms[lo];
            int mid = lo + LeftCount(hi - lo);
            var left = Node(lo, mid);
            return add(left, Node(mid, hi));
        }
    }

    /// <summary>The sum of <paramref name="terms"/> along the tree; 0 for none.</summary>
    public static double Sum(IReadOnlyList<double> terms) => terms.Count == 0 ? 0 : Sum(terms, (a, b) => a + b);
}
