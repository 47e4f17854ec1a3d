"""Interop with the Python stack, run on the GPU machine (transformers + peft installed; our CLI in .device/app).

  source .device/env.sh && python3 scripts/gpu/peft_interop.py [WORKDIR]

1. An adapter trained by `dotnet ... train` on the tiny model (dense fp32 base, so both sides share the base)
   loads with peft's PeftModel.from_pretrained, and its logits equal ours (fp32, max abs diff <= 1e-4).
2. An adapter created and saved by peft (non-zero lora_B) loads into QLoraNet (`logits --adapter`) with logits
   equal to peft's (fp32, 1e-4).
3. A `merge` output directory loads with transformers' AutoModelForCausalLM.from_pretrained and gives our logits
   (fp32, 1e-4).
Prints one JSON line per check and exits non-zero if any fails.
"""
import json, os, subprocess, sys
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from peft import LoraConfig, PeftModel, get_peft_model

work = sys.argv[1] if len(sys.argv) > 1 else "/tmp/interop"
os.makedirs(work, exist_ok=True)
tiny = "models/tiny-llama-sotu"
app = ["dotnet", ".device/app/QLoraNet.dll"]
ids = [1, 450, 377, 744, 338, 263, 2107, 17294, 29892, 322, 372, 471, 1754, 297, 278, 5972, 310, 278, 7205]
ids_arg = ",".join(map(str, ids))
ok = True


def theirs(model):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def report(name, a, b, tol=1e-4, **extra):
    global ok
    diff = (a - b).abs().max().item()
    passed = diff <= tol
    ok &= passed
    print(json.dumps({"check": name, "max_abs_diff": diff, "tolerance": tol, "passed": passed, **extra}))


# 1. our trained adapter -> peft
run = os.path.join(work, "run")
subprocess.run(app + ["train", "configs/quickstart.yaml", "quantization.type=none", "quantization.double_quant=false", "training.max_steps=12",
                      "training.eval_every=0", "training.save_every=0", "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
                      f"output.dir={run}"], check=True, stdout=subprocess.DEVNULL)
adapter = os.path.join(run, "final")
base = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
peft_model = PeftModel.from_pretrained(base, adapter).eval()
subprocess.run(app + ["logits", "--model", tiny, "--adapter", adapter, "--ids", ids_arg, "--out", os.path.join(work, "ours_trained.safetensors"),
                      "--device", "cpu", "--dtype", "fp32"], check=True, stdout=subprocess.DEVNULL)
ours_trained = load_file(os.path.join(work, "ours_trained.safetensors"))["logits"][0]
base_only = theirs(AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32))
report("our adapter in peft", ours_trained, theirs(peft_model), adapter_effect=(ours_trained - base_only).abs().max().item())

# 2. a peft adapter -> ours
torch.manual_seed(0)
m = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32),
                   LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM"))
with torch.no_grad():
    for n, p in m.named_parameters():
        if "lora_B" in n:
            p.normal_(0, 0.02)
m.eval()
peft_dir = os.path.join(work, "peft_adapter")
m.save_pretrained(peft_dir)
subprocess.run(app + ["logits", "--model", tiny, "--adapter", peft_dir, "--ids", ids_arg, "--out", os.path.join(work, "ours_peft.safetensors"),
                      "--device", "cpu", "--dtype", "fp32"], check=True, stdout=subprocess.DEVNULL)
ours_peft = load_file(os.path.join(work, "ours_peft.safetensors"))["logits"][0]
report("peft adapter in QLoraNet", ours_peft, theirs(m), adapter_effect=(ours_peft - base_only).abs().max().item())

# 3. our merge -> transformers
merged = os.path.join(work, "merged")
subprocess.run(app + ["merge", "--model", tiny, "--adapter", adapter, "--out", merged, "--dtype", "fp32", "--overwrite"],
               check=True, stdout=subprocess.DEVNULL)
hf_merged = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
report("our merged checkpoint in transformers", ours_trained, theirs(hf_merged))
sys.exit(0 if ok else 1)
