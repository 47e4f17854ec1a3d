#!/usr/bin/env bash
# The whole product path on a Llama-2-7B-shaped checkpoint, through the real CLI, on the GPU machine:
# inspect -> train (YAML config, NF4 + DQ, LoRA r=16 q/k/v/o, bf16, checkpointing, seq 512 x micro-batch 4, 30 steps)
# -> merge (streaming, --base nf4-dq) -> generate from the merged directory. Each step's wall time, host peak RSS and
# device peak are measured by scripts/gpu/measure.py.
#   source .device/env.sh && bash scripts/gpu/pipeline_7b.sh
set -uo pipefail
ckpt=${CKPT:-/tmp/llama7b}
work=${WORK:-/tmp/qln-7b}
app=(dotnet .device/app/QLoraNet.dll)
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
m() { python3 scripts/gpu/measure.py "$@"; }
if [[ ! -f "$ckpt/config.json" ]]; then
  python3 .device/make_random_llama.py "$ckpt" --tokenizer models/tiny-llama-sotu/tokenizer.model >/dev/null 2>&1
fi
rm -rf "$work"; mkdir -p "$work"
"${app[@]}" inspect --model "$ckpt" --seq 512 --batch 4 --lora-r 16
m train -- "${app[@]}" train configs/llama2-7b-sales.yaml "model.path=$ckpt" data.max_seq_len=512 \
  training.micro_batch_size=4 training.gradient_accumulation_steps=1 training.max_steps=30 training.eval_every=15 \
  training.save_every=10 training.warmup_steps=3 training.warmup_ratio=null training.early_stopping_patience=null "output.dir=$work/run"
m merge -- "${app[@]}" merge --model "$ckpt" --adapter "$work/run/final" --out "$work/merged" --base nf4-dq --dtype bf16
ls -la "$work/merged"
m generate -- "${app[@]}" generate --model "$work/merged" --prompt "Hello, how much is the Traverse 65 backpack?" \
  --max-new-tokens 16 --device cuda --json
