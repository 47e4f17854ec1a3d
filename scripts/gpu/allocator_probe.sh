#!/usr/bin/env bash
# Issue 15 item 1: establishes, on the GPU machine, the layout of PyTorch's CUDA caching allocator that the C# reader
# (src/Quant/Kernels/CudaAllocatorLayout.cs) calls through its vtable, and checks the reader against torch:
#   1. layout.cpp compiled against this torch's own c10 headers prints the vtable slots of
#      c10::DeviceAllocator::getDeviceStats / resetPeakStats and the DeviceStats offsets (layout.json);
#   2. verify.py calls those slots with ctypes in a process that imported torch and compares allocated/reserved
#      current/peak with torch.cuda.memory_stats() around a 1 GiB allocation, then resets the peak (verify.json);
#   3. the published app's `info --allocator` (when the carry folder has app.tar.xz) does the same from C#
#      (dotnet.json), so its figures and layout can be set beside Python's;
#   4. then a 6-step `train` of the quickstart on cuda (train.log; metrics.csv's memory columns in train.json): the
#      allocated/reserved peak columns filled, the progress line and the summary as a user sees them.
# On the GPU machine, from the repository root:
#   bash scripts/gpu/allocator_probe.sh [--carry .gpu-speed]
# Writes $OUT/allocator/ (probe.log, layout.json, verify.json, dotnet.json, summary.json); the last line printed is
# the compact summary. Each step runs under its own timeout; the whole takes about a minute.
set -uo pipefail
carry=.gpu-speed
while [[ $# -gt 0 ]]; do
  case $1 in
    --carry) carry=$2; shift 2 ;;
    *) echo "unknown option $1 (--carry DIR)" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")/allocator" && pwd)
OUT=${OUT:-/tmp/qln-allocator}; dir=$OUT/allocator; mkdir -p "$dir"
log=$dir/probe.log; : > "$log"
say() { echo "== $*" >> "$log"; }

say "torch"
torch_dir=$(timeout 30 python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))' 2>>"$log")
torch_version=$(timeout 30 python3 -c 'import torch;print(torch.__version__)' 2>>"$log")
abi=$(timeout 30 python3 -c 'import torch;print(int(torch.compiled_with_cxx11_abi()))' 2>>"$log")
echo "torch $torch_version at $torch_dir, cxx11 abi $abi" >> "$log"
say "exports of libc10.so"
nm -D --defined-only "$torch_dir/lib/libc10.so" 2>>"$log" | grep -E 'GetAllocator' >> "$log" || echo "GetAllocator not exported" >> "$log"

say "1. layout.cpp"
layout_ok=false
for std in c++20 c++17; do
  if timeout 40 g++ -std=$std -O0 -D_GLIBCXX_USE_CXX11_ABI=${abi:-1} -I"$torch_dir/include" "$here/layout.cpp" \
       -o /tmp/qln-allocator-layout -L"$torch_dir/lib" -lc10 -Wl,-rpath,"$torch_dir/lib" >> "$log" 2>&1; then
    if timeout 10 /tmp/qln-allocator-layout > "$dir/layout.json" 2>> "$log"; then layout_ok=true; echo "compiled with -std=$std" >> "$log"; break; fi
  fi
  echo "-std=$std failed" >> "$log"
done
cat "$dir/layout.json" >> "$log" 2>/dev/null

say "2. verify.py"
verify_ok=false
layout_arg=(); $layout_ok && layout_arg=("$dir/layout.json")
if timeout 60 python3 "$here/verify.py" "${layout_arg[@]}" > "$dir/verify.json" 2>> "$log"; then
  python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["ok"] else 1)' "$dir/verify.json" && verify_ok=true
fi
cat "$dir/verify.json" >> "$log" 2>/dev/null

say "3. dotnet info --allocator"
dotnet_ok=null
if [[ -f $carry/app.tar.xz && -f $carry/env.sh ]]; then
  appdir=/tmp/qln-app-allocator; rm -rf "$appdir"; mkdir -p "$appdir"
  if timeout 60 tar -xJf "$carry/app.tar.xz" -C "$appdir" >> "$log" 2>&1; then
    # shellcheck disable=SC1090
    source "$carry/env.sh" >/dev/null 2>&1
    if timeout 60 dotnet "$appdir/QLoraNet.dll" info --allocator > "$dir/dotnet.json" 2>> "$log"; then dotnet_ok=true; else dotnet_ok=false; fi
    cat "$dir/dotnet.json" >> "$log"
    say "4. train (quickstart, cuda, 6 steps)"
    rm -rf /tmp/qln-allocator-run
    timeout 60 dotnet "$appdir/QLoraNet.dll" train configs/quickstart.yaml model.device=cuda training.max_steps=6 \
      training.log_every=2 training.eval_every=3 training.save_every=0 output.dir=/tmp/qln-allocator-run > "$dir/train.log" 2>&1
    echo "train rc=$?" >> "$dir/train.log"
    cat "$dir/train.log" >> "$log"
    python3 - /tmp/qln-allocator-run/metrics.csv > "$dir/train.json" 2>> "$log" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
keep = ["step", "host_peak_rss_mb", "device_allocated_peak_mb", "device_reserved_peak_mb", "device_used_peak_mb"]
print(json.dumps({"rows": [{k: r.get(k) for k in keep} for r in rows]}))
PY
  else
    echo "unpacking $carry/app.tar.xz failed" >> "$log"; dotnet_ok=false
  fi
else
  echo "no $carry/app.tar.xz and env.sh: skipped" >> "$log"
fi

python3 - "$dir" "$torch_version" "$layout_ok" "$verify_ok" "$dotnet_ok" > "$dir/summary.json" <<'PY'
import json, os, sys
d, version, layout_ok, verify_ok, dotnet_ok = sys.argv[1:6]
def load(name):
    try:
        with open(os.path.join(d, name)) as f: return json.loads(f.read().strip().splitlines()[-1])
    except Exception as e: return None
layout, verify, dotnet, train = load("layout.json"), load("verify.json"), load("dotnet.json"), load("train.json")
filled = None if train is None else all(r.get("device_allocated_peak_mb") and r.get("device_reserved_peak_mb") for r in train["rows"])
print(json.dumps({"torch": version, "layout_compiled": layout_ok == "true", "layout": layout,
    "python_ok": verify_ok == "true", "python_checks": (verify or {}).get("checks"),
    "dotnet_ok": None if dotnet_ok == "null" else dotnet_ok == "true",
    "dotnet": None if dotnet is None else {k: dotnet.get(k) for k in ("status", "reason", "layout", "self_check", "ok")},
    "train_allocator_columns_filled": filled, "train_last_row": None if not train or not train["rows"] else train["rows"][-1]},
    separators=(",", ":")))
PY
cat "$dir/summary.json"
