#!/usr/bin/env bash
# Build the PTX of our CUDA kernels (run where nvcc exists, e.g. the GPU machine). The .ptx files are committed
# and embedded into QLoraNet.Quant.dll, so users need no CUDA toolkit, only the driver (which JIT-compiles PTX).
# sm_80 PTX runs on Ampere, Ada and Hopper.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-src/Quant/Kernels}
nvcc -ptx -arch=sm_80 -O3 -o "$out/nf4_dequant.ptx" src/Quant/Kernels/nf4_dequant.cu
nvcc -cubin -arch=sm_90 -O3 -Xptxas -v -o /tmp/nf4_dequant.cubin src/Quant/Kernels/nf4_dequant.cu 2>&1 | grep -E "registers|spill|stack" || true
echo "built $out/nf4_dequant.ptx"
