#!/usr/bin/env bash
# QLoRA recovery over each base format: the quickstart recipe (configs/quickstart.yaml: tiny Llama, sales dataset,
# LoRA r 8 on q/k/v/o, lr 1e-3 cosine) shortened to 40 steps (cosine over 40 steps, 4 warm-up steps), on the CPU
# with fp32 compute, once per base. Each run's metrics.csv holds the held-out sales loss (the whole
# datasets/sales/validation.jsonl, answer tokens) at step 0 (the base without adapter) and at step 40; the script
# prints them as the markdown table in docs/QUANTIZATION.md ("QLoRA recovery over each base").
#
#   bash scripts/qlora_recovery.sh                 # all bases, runs under runs/qlora-recovery/<base>
#   OUT=/tmp/rec bash scripts/qlora_recovery.sh hqq2 ternary
#
# Runs one at a time; a base whose run already reached step 40 is skipped (so an interrupted sweep resumes), an
# unfinished one is started again. int4-g64 is not a base of this model: its MLP width 688 is no multiple of 64.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/qlora-recovery}
STEPS=40
BASES=("$@")
[ ${#BASES[@]} -gt 0 ] || BASES=(none nf4-dq fp4 int8 int4-g16 llm-int8 hqq4 hqq3 hqq2 ternary)

# Bits per weight over the 28 decoder projections (docs/QUANTIZATION.md, "The tiny model under every base").
declare -A BITS=([none]=16 [nf4-dq]=4.127 [fp4]=4.500 [int8]=8.108 [int4-g16]=6.000 [llm-int8]=8.108
                 [hqq4]=4.500 [hqq3]=3.712 [hqq2]=2.500 [ternary]=2.000)

DLL=bin/Debug/net10.0/QLoraNet.dll
if [ ! -f "$DLL" ]; then
  dotnet build QLoraNet.csproj -c Debug -v q -nologo
fi

# A finished run has a metrics.csv row for the last step with a validation loss.
finished() {
  local csv=$1/metrics.csv
  [ -f "$csv" ] && awk -F, -v s="$STEPS" 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    $c["step"] == s && $c["val_loss"] != "" { ok = 1 } END { exit !ok }' "$csv"
}

mkdir -p "$OUT"
for base in "${BASES[@]}"; do
  dir=$OUT/$base
  if finished "$dir"; then echo "== $base: done before, skipped"; continue; fi
  rm -rf "$dir"
  echo "== $base: training ($(date -u +%H:%M:%S) UTC)"
  # The quantization section is replaced whole (the quickstart's double_quant/blocksize belong to nf4).
  dotnet "$DLL" train configs/quickstart.yaml \
    "quantization={type: $base, compute_dtype: fp32}" \
    "output.dir=$dir" training.max_steps=$STEPS training.eval_every=$STEPS training.save_every=$STEPS \
    training.warmup_steps=4 > "$OUT/$base.log" 2>&1 \
    || { echo "== $base: FAILED (exit $?), see $OUT/$base.log:"; tail -3 "$OUT/$base.log"; }
done

# The table: loss before (step 0) and after, recovery, gap to LoRA over none after, mean seconds per step.
echo
echo "| base | bits/weight | held-out loss, step 0 (base) | after $STEPS steps | recovery (before - after) | after - none's after | s/step |"
echo "|---|---|---|---|---|---|---|"
row() {  # prints "before after s/step" of a finished run
  awk -F, -v s="$STEPS" 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    $c["step"] == 0 { b = $c["val_loss"] } $c["step"] == s && $c["val_loss"] != "" { a = $c["val_loss"] }
    $c["step"] > 0 && $c["step_s"] != "" { t += $c["step_s"]; n++ }
    END { printf "%s %s %s\n", b, a, (n ? t / n : "") }' "$1/metrics.csv"
}
none_after=
if finished "$OUT/none"; then read -r _ none_after _ < <(row "$OUT/none"); fi
for base in "${BASES[@]}"; do
  dir=$OUT/$base
  if ! finished "$dir"; then echo "| \`$base\` | ${BITS[$base]:-?} | did not finish (see $OUT/$base.log) | | | | |"; continue; fi
  read -r before after secs < <(row "$dir")
  awk -v b="$base" -v bits="${BITS[$base]:-?}" -v x="$before" -v y="$after" -v s="$secs" -v n="$none_after" 'BEGIN {
    gap = (n == "" ? "?" : sprintf("%+.4f", y - n))
    printf "| `%s` | %s | %.4f | %.4f | %.4f | %s | %.2f |\n", b, bits, x, y, x - y, gap, s }'
done
