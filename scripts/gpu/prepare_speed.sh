#!/usr/bin/env bash
# Makes the carry folder of scripts/gpu/bench_speed.sh (default .gpu-speed/, git-ignored), here, from the checkout:
#   app.tar.xz        this checkout's CLI as a user gets it: the DEFAULT build (TorchBackend=cpu), published
#                     framework-dependent for linux-x64, without debug symbols or plotting natives. The bundled CPU
#                     libtorch in libtorch/ (500 MB) cannot travel: its libraries are replaced by SENTINELS (same file
#                     names and SONAMEs; a constructor that prints "SENTINEL" and exits 97), so any run that loads the
#                     bundled copies instead of the GPU machine's CUDA libtorch fails loudly. Discovery
#                     (src/Native/LibTorchDiscovery) finds the machine's PyTorch torch/lib by itself; bench_speed.sh and
#                     prove_default_build.sh both run this app.
#   dotnet-rt.tar.xz  the .NET runtime, without the debugger/diagnostics natives and assemblies the CLI never loads
#   env.sh, hf_peft_lora_bench.py, make_random_llama.py   from ../shared (the machine's runtime setup, the peer, the
#                     random checkpoint maker)
# Everything that travels must stay under 64 MiB with the repository's tracked files (~35 MB): this folder is held
# to 25 MB. Usage, from the repository root: bash scripts/gpu/prepare_speed.sh [DIR]
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
dir=${1:-.gpu-speed}
shared=${QLN_SHARED:-}
for c in ../shared ../../shared /work/shared; do [[ -z $shared && -d $c/gpu && -d $c/peer ]] && shared=$c; done
[[ -n $shared ]] || { echo "no ../shared/gpu and ../shared/peer (set QLN_SHARED)" >&2; exit 1; }
mkdir -p "$dir"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

rc=0; dotnet publish QLoraNet.csproj -c Release -r linux-x64 --self-contained false -o "$tmp/app" > "$tmp/publish.log" 2>&1 || rc=$?
grep -E " error |->" "$tmp/publish.log" || true
[[ $rc -eq 0 && -f "$tmp/app/QLoraNet.dll" ]] || { echo "publish failed (rc=$rc)" >&2; exit 1; }
rm -f "$tmp"/app/*.pdb "$tmp"/app/libSkiaSharp.so "$tmp"/app/libHarfBuzzSharp.so
# The default layout: libtorch only in libtorch/, never in the native search directory (it would shadow the machine's).
if compgen -G "$tmp/app/libtorch*.so*" > /dev/null || compgen -G "$tmp/app/libc10*.so*" > /dev/null; then
  echo "the publish holds libtorch in its native directory: it would shadow the GPU machine's" >&2; exit 1
fi
[[ -f "$tmp/app/libtorch/libtorch_cpu.so" ]] || { echo "the publish has no bundled CPU libtorch in libtorch/: not the default build" >&2; exit 1; }
for lib in "$tmp"/app/libtorch/*.so*; do
  name=${lib##*/}
  printf '#include <stdio.h>\n#include <unistd.h>\n__attribute__((constructor)) static void s(void){fprintf(stderr,"SENTINEL: the bundled CPU %s was loaded\\n");fflush(stderr);_exit(97);}\n' "$name" > "$tmp/sentinel.c"
  gcc -shared -fPIC -Wl,-soname,"$name" -o "$lib" "$tmp/sentinel.c"
done
echo "sentinels: $(cd "$tmp/app/libtorch" && echo *)"
tar -cf - -C "$tmp/app" . | xz -T2 -9 > "$dir/app.tar.xz"

dotnet_root=$(dirname "$(readlink -f "$(command -v dotnet)")")
fx=$(ls -d "$dotnet_root"/shared/Microsoft.NETCore.App/* | sort -V | tail -1)
if [[ ! -f "$dir/dotnet-rt.tar.xz" || "$(cat "$dir/dotnet-rt.version" 2>/dev/null)" != "${fx##*/}" ]]; then
  echo "packing the .NET runtime ${fx##*/} (a minute or two, once)..."
  # Left out: the debugger and diagnostics natives, the alternative GCs, Visual Basic, dynamic, HTTP/TLS, XML, ADO.NET,
  # WCF serialization (checked: train, bench train, bench kernel --smoke and info run without them).
  tar -cf - -C "$dotnet_root" --exclude='libmscordaccore.so' --exclude='libmscordbi.so' --exclude='libclrgc*.so' \
      --exclude='libcoreclrtraceptprovider.so' --exclude='Microsoft.VisualBasic*.dll' --exclude='Microsoft.CSharp.dll' \
      --exclude='System.Net.Http.dll' --exclude='System.Net.Security.dll' --exclude='System.Private.Xml*.dll' \
      --exclude='System.Data.Common.dll' --exclude='System.Private.DataContractSerialization.dll' --exclude='System.Linq.AsyncEnumerable.dll' \
      dotnet host "shared/Microsoft.NETCore.App/${fx##*/}" | xz -T2 -9 > "$dir/dotnet-rt.tar.xz"
  echo "${fx##*/}" > "$dir/dotnet-rt.version"
fi
cp "$shared/gpu/env.sh" "$shared/gpu/make_random_llama.py" "$shared/peer/hf_peft_lora_bench.py" "$dir/"
size=$(du -sm "$dir" | cut -f1)
du -sh "$dir"/* | sed 's/^/  /'
echo "$dir is ${size} MB"
if (( size > 25 )); then echo "over the 25 MB this folder may take" >&2; exit 1; fi
