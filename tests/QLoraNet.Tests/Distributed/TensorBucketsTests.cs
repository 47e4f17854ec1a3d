using QLoraNet.Distributed;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Distributed;

[Trait("tier", "unit")]
public class TensorBucketsTests
{
    [Fact]
    public void Buckets_hold_consecutive_tensors_of_one_dtype_up_to_the_size()
    {
        // 100 floats = 400 bytes each; 1000-byte buckets hold two.
        var t = new List<Tensor> { zeros(100), zeros(100), zeros(100), zeros(10, ScalarType.BFloat16), zeros(100), zeros(1000) };
        var plan = TensorBuckets.Plan(t, 1000);
        Assert.Equal(new[] { (0, 2), (2, 1), (3, 1), (4, 1), (5, 1) }, plan.Select(b => (b.First, b.Count)));
        Assert.Equal(ScalarType.BFloat16, plan[2].DType);
        Assert.Equal(200, plan[0].Elements);
    }

    [Fact]
    public void Pack_and_unpack_round_trip_and_a_lone_contiguous_tensor_is_reduced_in_place()
    {
        var t = new List<Tensor> { arange(6f).reshape(2, 3), arange(4f).add(10), arange(3f).add(20) };
        var plan = TensorBuckets.Plan(t, 1 << 20);
        var flat = TensorBuckets.Pack(t, plan[0], CPU);
        Assert.Equal(new float[] { 0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 20, 21, 22 }, flat.data<float>().ToArray());
        flat.mul_(2);
        TensorBuckets.Unpack(flat, t, plan[0], CPU);
        Assert.Equal(10f, t[0][1, 2].item<float>());
        Assert.Equal(44f, t[2][2].item<float>());

        // A non-contiguous tensor (a transposed view) packs and unpacks in its logical (row-major) order.
        var parent = arange(6f).reshape(2, 3);
        var strided = new List<Tensor> { parent.t(), arange(2f) };
        var both = TensorBuckets.Pack(strided, TensorBuckets.Plan(strided, 1 << 20)[0], CPU);
        Assert.Equal(new float[] { 0, 3, 1, 4, 2, 5, 0, 1 }, both.data<float>().ToArray());
        both.add_(100);
        TensorBuckets.Unpack(both, strided, TensorBuckets.Plan(strided, 1 << 20)[0], CPU);
        Assert.Equal(new float[] { 100, 101, 102, 103, 104, 105 }, parent.reshape(-1).data<float>().ToArray());

        var lone = new List<Tensor> { arange(5f) };
        var view = TensorBuckets.Pack(lone, TensorBuckets.Plan(lone, 1 << 20)[0], CPU);
        view.add_(1);
        Assert.Equal(5f, lone[0][4].item<float>());
    }
}
