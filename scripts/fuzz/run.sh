#!/usr/bin/env bash
# Coverage-guided fuzzing of QLoraNet's readers with SharpFuzz + AFL++ (longer runs than CI's seeded suite).
#
#   scripts/fuzz/run.sh [SECONDS_PER_READER] [READER ...]
#
# Readers: safetensors index config.json adapter_config.json tokenizer.model yaml override jsonl csv gguf metrics.csv (default:
# all, 60 s each). Needs AFL++ (Debian: apt-get install afl++) and the SharpFuzz tool
# (dotnet tool install -g SharpFuzz.CommandLine --version 2.3.0). Builds tests/QLoraNet.Fuzz in Release, instruments
# the QLoraNet assemblies in its output with `sharpfuzz`, and runs afl-fuzz at low priority (nice 19) per reader
# with the reader's valid seed files as the initial corpus. Findings land in fuzz-findings/<reader>/ (git-ignored):
# crashes/ (an exception that is not a clean one-line error, or an OutOfMemoryException under the 512 MiB managed
# heap cap: a runaway) and hangs/ (no result within 10 s). Replay one with
#   dotnet tests/QLoraNet.Fuzz/bin/Release/net10.0/QLoraNet.Fuzz.dll <reader> < fuzz-findings/<reader>/default/crashes/id:...
# and keep it as a regression test by copying it to tests/fixtures/fuzz/<reader>/<name>.bin.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
shift || true
readers=("$@")
[[ ${#readers[@]} -gt 0 ]] || readers=(safetensors index config.json adapter_config.json tokenizer.model yaml override jsonl csv gguf metrics.csv)
export PATH="$PATH:$HOME/.dotnet/tools"
command -v afl-fuzz >/dev/null || { echo "afl-fuzz not found: apt-get install afl++" >&2; exit 1; }
command -v sharpfuzz >/dev/null || { echo "sharpfuzz not found: dotnet tool install -g SharpFuzz.CommandLine --version 2.3.0" >&2; exit 1; }

out=tests/QLoraNet.Fuzz/bin/Release/net10.0
rm -rf tests/QLoraNet.Fuzz/bin/Release tests/QLoraNet.Fuzz/obj/Release   # instrument a fresh build, once
dotnet build tests/QLoraNet.Fuzz -c Release -v q -nologo
for r in "${readers[@]}"; do   # seeds first: instrumented code only runs inside the fuzzer loop
  rm -rf "fuzz-findings/seeds/$r" "fuzz-findings/$r"
  dotnet "$out/QLoraNet.Fuzz.dll" "$r" --seeds "fuzz-findings/seeds/$r"
done
for asm in QLoraNet.Formats QLoraNet.Models QLoraNet.Peft QLoraNet.Training; do sharpfuzz "$out/$asm.dll"; done

export AFL_SKIP_BIN_CHECK=1 AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export DOTNET_GCHeapHardLimit=0x20000000    # 512 MiB: a runaway allocation becomes an OutOfMemoryException, a crash
printf '%-20s %10s %8s %8s %8s\n' reader execs paths crashes hangs
for r in "${readers[@]}"; do
  seeds="fuzz-findings/seeds/$r"; findings="fuzz-findings/$r"
  nice -n 19 afl-fuzz -i "$seeds" -o "$findings" -t 10000 -m none -V "$seconds" -- dotnet "$out/QLoraNet.Fuzz.dll" "$r" \
    > "fuzz-findings/$r.log" 2>&1 || true
  stats="$findings/default/fuzzer_stats"
  get() { awk -F': *' -v k="$1" '$1 ~ "^"k" *$" {print $2}' "$stats" 2>/dev/null || echo "?"; }
  printf '%-20s %10s %8s %8s %8s\n' "$r" "$(get execs_done)" "$(get corpus_count)" "$(get saved_crashes)" "$(get saved_hangs)"
done
