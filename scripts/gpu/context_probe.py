"""Where a CUDA process's memory goes outside the caching allocator: the context, the libraries' kernels, local memory.

  python3 scripts/gpu/context_probe.py [--ptx-dir src/Kernels/Cuda]

NVML's "used" for the whole device counts memory no process holds (the driver's own share, read here before CUDA
starts), the process's context, the modules its kernels load (CUDA_MODULE_LOADING=LAZY loads a kernel's module on its
first launch), the local memory the driver reserves for the largest per-thread stack any launched kernel needs (it
grows, and is not given back until the stack limit is set again), and the caching allocator's reserve. This probe
runs the kinds of kernel a training step of ours launches, one kind at a time, and prints after each what the process
holds by NVML minus what the allocator reserves: the part no `empty_cache` can give back. With --ptx-dir it also runs
ptxas -v on each of our kernels' PTX for sm_90 (their stack frames, i.e. the local memory they would reserve).
Prints one JSON object per stage and a summary line.
"""
import ctypes, glob, json, os, subprocess, sys

import pynvml

pynvml.nvmlInit()
handle = pynvml.nvmlDeviceGetHandleByIndex(0)
GIB = 2 ** 30
baseline = pynvml.nvmlDeviceGetMemoryInfo(handle).used


def process_used():
    """Sum over the device's compute processes (this probe is the only one: in a container NVML's pids are the host's)."""
    procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    return sum((p.usedGpuMemory or 0) for p in procs)


import torch  # noqa: E402  (after the baseline: importing torch does not touch the device, its first use does)
import torch.nn.functional as F  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

stages = []


def mark(name):
    torch.cuda.synchronize()
    proc, dev = process_used(), pynvml.nvmlDeviceGetMemoryInfo(handle).used
    reserved = torch.cuda.memory_reserved()
    row = {"stage": name, "device_used_gib": round(dev / GIB, 3), "process_gib": round(proc / GIB, 3),
           "reserved_gib": round(reserved / GIB, 3), "outside_allocator_gib": round((proc - reserved) / GIB, 3)}
    if stages:
        row["outside_delta_mib"] = round(((proc - reserved) - stages[-1]["_outside"]) / 2 ** 20, 1)
    print(json.dumps(row), flush=True)
    row["_outside"] = proc - reserved
    stages.append(row)


print(json.dumps({"stage": "before CUDA", "device_used_gib": round(baseline / GIB, 3),
                  "module_loading": os.environ.get("CUDA_MODULE_LOADING", "(unset: libtorch sets LAZY)"),
                  "torch": torch.__version__, "cudnn": torch.backends.cudnn.version()}), flush=True)
dev = torch.device("cuda")
x = torch.zeros(1, device=dev)
mark("context (one tensor)")

a = torch.randn(2048, 4096, device=dev, dtype=torch.bfloat16)
w = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16)
y = a @ w.t()
mark("bf16 GEMM (cuBLAS)")
y = torch.addmm(a, a, w.t())
z = F.linear(a, w, torch.zeros(4096, device=dev, dtype=torch.bfloat16))
mark("addmm / linear with bias (cuBLASLt)")
af = a.float().requires_grad_()
y = (af @ w.float().t()).sum()
y.backward()
mark("fp32 GEMM and its backward")

q = torch.randn(4, 32, 512, 128, device=dev, dtype=torch.bfloat16, requires_grad=True)
for name, backend in [("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                      ("cudnn", SDPBackend.CUDNN_ATTENTION)]:
    try:
        with sdpa_kernel(backend):
            o = F.scaled_dot_product_attention(q, q, q, is_causal=True)
            o.sum().backward()
        mark(f"SDPA {name} forward and backward")
    except Exception as e:  # a backend this build or GPU lacks
        print(json.dumps({"stage": f"SDPA {name}", "error": str(e)[:200]}), flush=True)
o = F.scaled_dot_product_attention(q, q, q, is_causal=True)
o.sum().backward()
mark("SDPA default choice")

logits = torch.randn(2048, 32000, device=dev, requires_grad=True)
loss = F.cross_entropy(logits, torch.randint(0, 32000, (2048,), device=dev))
loss.backward()
s = F.silu(a) * a
r = torch.rsqrt(a.float().pow(2).mean(-1, keepdim=True))
mark("cross entropy, SiLU, RMSNorm ops")

del a, w, y, z, af, q, o, logits, loss, s, r, x
torch.cuda.empty_cache()
mark("after empty_cache")

# The local memory reservation: cuCtxSetLimit(CU_LIMIT_STACK_SIZE) resizes it (CUDA driver API, 'cuCtxSetLimit').
cuda = ctypes.CDLL("libcuda.so.1")
CU_LIMIT_STACK_SIZE = 0
val = ctypes.c_size_t()
rc = cuda.cuCtxGetLimit(ctypes.byref(val), CU_LIMIT_STACK_SIZE)
stack = val.value
rc2 = cuda.cuCtxSetLimit(CU_LIMIT_STACK_SIZE, ctypes.c_size_t(stack))
mark(f"stack limit set again to {stack} B (rc {rc}/{rc2})")

if "--ptx-dir" in sys.argv:
    d = sys.argv[sys.argv.index("--ptx-dir") + 1]
    for f in sorted(glob.glob(os.path.join(d, "*.ptx"))):
        out = subprocess.run(["ptxas", "-v", "-arch=sm_90", f, "-o", "/dev/null"], capture_output=True, text=True)
        frames = [ln.strip() for ln in (out.stdout + out.stderr).splitlines() if "stack frame" in ln or "Compiling" in ln]
        print(json.dumps({"ptx": os.path.basename(f), "rc": out.returncode, "lines": frames[:40]}), flush=True)

print(json.dumps({"summary": {s["stage"]: s["outside_allocator_gib"] for s in stages},
                  "driver_share_before_cuda_gib": round(baseline / GIB, 3)}), flush=True)
