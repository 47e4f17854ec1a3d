using QLoraNet.Kernels;
using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Kernels.KernelTestData;

namespace QLoraNet.Tests.Kernels;

/// <summary>LoRA's factor gradients into their fp32 .grad (FusedWeightGradient): the reference is autograd's arithmetic
/// bit for bit (a product in the operands' dtype, then an fp32 add); CPU tensors take it and the tally says so; how
/// cuBLAS would read each operand layout. The cuBLAS GEMM itself runs on the device only (`bench kernel --only lora`,
/// docs/BENCHMARKS.md session 32: within fp32 accumulation's bound of fp64).</summary>
[Trait("tier", "unit")]
public class WeightGradientTests
{
    const long N = 10, In = 24, Out = 20, R = 4;

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void The_reference_is_the_product_then_the_fp32_add(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var dy = Randn([N, Out], dtype, 1);
        var down = Randn([N, R], dtype, 2);
        var start = Randn([Out, R], ScalarType.Float32, 3);
        var grad = start.clone();
        FusedWeightGradient.AddProductReference(grad, dy.t(), down, 2.5);
        var expected = start.clone().add_(dy.t().mm(down), alpha: 2.5);     // what LoraLinearTape did before
        Assert.True(grad.equal(expected).all().item<bool>());
    }

    [Fact]
    public void CPU_tensors_take_the_reference_and_are_counted()
    {
        using var scope = NewDisposeScope();
        var op = new FusedWeightGradient(null, "CPU tensors: torch-op reference");
        Assert.Equal(FusedPath.TorchOps, op.Path);
        var g = Randn([N, 3 * R], ScalarType.BFloat16, 4);                     // (N, Σr): the group's scaled dy B
        var h = Randn([N, In], ScalarType.BFloat16, 5);
        // Three A gradients laid out as a flat buffer lays them out (A, B, A, B, A, B).
        var flat = Randn([3 * (R * In + Out * R)], ScalarType.Float32, 6);
        var expectedFlat = flat.clone();
        Tensor A(Tensor f, int i) => f.narrow(0, i * (R * In + Out * R), R * In).view(R, In);
        op.AddProducts([A(flat, 0), A(flat, 1), A(flat, 2)], g.t(), h, 1.0);
        // The shared tape's arithmetic before: one product for the group, each row block added.
        var dA = g.t().mm(h);
        for (int i = 0; i < 3; i++) A(expectedFlat, i).add_(dA.narrow(0, i * R, R));
        Assert.True(flat.equal(expectedFlat).all().item<bool>());
        op.AddProduct(A(flat, 0), g.narrow(1, 0, R).t(), h, 0.5);
        Assert.Equal((0L, 2L), op.Calls);
    }

    [Fact]
    public void Operands_are_described_as_cuBLAS_reads_them()
    {
        using var scope = NewDisposeScope();
        var rowMajor = zeros(6, 8);
        var r = Cublas.AsTransposed(rowMajor)!.Value;
        Assert.False(r.Transposed);
        Assert.Equal(8, r.Ld);
        var transposed = zeros(8, 6).t();                                          // (6, 8), unit row stride
        var t = Cublas.AsTransposed(transposed)!.Value;
        Assert.True(t.Transposed);
        Assert.Equal(6, t.Ld);
        var columns = zeros(6, 20).narrow(1, 4, 8);                                // a block of columns: ld 20
        Assert.Equal(20, Cublas.AsTransposed(columns)!.Value.Ld);
        Assert.Null(Cublas.AsTransposed(zeros(6, 8, 2).select(2, 0)));             // neither stride is 1
        Assert.Null(Cublas.AsTransposed(zeros(6)));
        Assert.Equal(14, Cublas.InputType(ScalarType.BFloat16));                    // CUDA_R_16BF
        Assert.Null(Cublas.InputType(ScalarType.Float32));
    }

    [Fact]
    public void The_selection_reports_the_path_and_the_caller_can_choose_the_reference()
    {
        var cpu = FusedKernels.Load(CPU);
        Assert.Contains("lora weight gradients on cpu: torch-ops (CPU tensors: torch-op reference)", cpu.Report());
        Assert.True(cpu.CallCounts().ContainsKey("lora_weight_gradient"));
        if (!cuda.is_available()) return;
        var chosen = FusedKernels.Load(CUDA, torchWeightGradients: true);
        Assert.Equal(FusedPath.TorchOps, chosen.WeightGradient.Path);
        Assert.Equal("torch-op reference chosen by the caller", chosen.WeightGradient.Reason);
    }

    [Fact]
    public void The_device_self_check_accepts_exact_sums_and_names_a_rounded_one()
    {
        // What cuBLAS computes (bf16 operands, fp32 accumulation and C), emulated: exact on the check's values.
        static void Fp32(Tensor grad, Tensor p, Tensor q, double alpha)
        {
            using var product = p.to(ScalarType.Float32).mm(q.to(ScalarType.Float32));
            grad.add_(product, alpha: alpha);
        }
        Assert.Null(FusedWeightGradient.CheckSums(CPU, Fp32, (grads, p, q, alpha) =>
        {
            long offset = 0;
            foreach (var g in grads)
            {
                using var block = p.narrow(0, offset, g.size(0));
                Fp32(g, block, q, alpha);
                offset += g.size(0);
            }
        }));
        // The reference rounds each product to bf16 first: sums up to 144 in sixteenths do not fit its 8 bits.
        var wrong = FusedWeightGradient.CheckSums(CPU, FusedWeightGradient.AddProductReference, FusedWeightGradient.AddProductsReference);
        Assert.StartsWith("cuBLAS's sums differ from the exact ones by up to ", wrong);
        Assert.Equal("no cuBLAS", new FusedWeightGradient(null, "none").SelfCheck(CPU));
    }
}
