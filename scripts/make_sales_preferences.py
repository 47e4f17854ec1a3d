#!/usr/bin/env python3
"""Preference pairs for DPO (`training.objective: dpo`) from the sales chat dataset, in TRL's format.

Each conversation of datasets/sales/{train,validation}.jsonl gives one pair: the prompt is the conversation up to its
last user message (system message and earlier turns included, as {role, content} messages), "chosen" is the shop's
real answer and "rejected" a plausible wrong one: every dollar amount raised by a quarter (a hallucinated price), or,
for an answer without prices, every other number changed, or else the final answer of another conversation (an
answer to a different question). Deterministic: the same files every run (seed 7).

Usage: python3 scripts/make_sales_preferences.py   (writes datasets/sales/preferences_{train,validation}.jsonl)
"""
import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SALES = ROOT / "datasets" / "sales"
MONEY = re.compile(r"\$(\d{1,3}(?:,\d{3})*|\d+)(\.\d{2})?")
NUMBER = re.compile(r"(?<![\w$.,-])(\d+)(?![\w.,]\d)")


def wrong_prices(text):
    def raise_(m):
        value = float(m.group(1).replace(",", "") + (m.group(2) or ""))
        wrong = round(value * 1.25 + 0.5, 2)
        return f"${wrong:,.2f}" if m.group(2) else f"${int(wrong):,}"
    return MONEY.sub(raise_, text)


def wrong_numbers(text):
    return NUMBER.sub(lambda m: str(int(m.group(1)) + (2 if int(m.group(1)) < 10 else 10)), text)


def pairs(rows, rng):
    finals = [r["messages"][-1]["content"] for r in rows]
    out = []
    for i, r in enumerate(rows):
        messages = r["messages"]
        assert messages[-1]["role"] == "assistant" and messages[-2]["role"] == "user"
        chosen = messages[-1]["content"]
        rejected = wrong_prices(chosen)
        if rejected == chosen:
            rejected = wrong_numbers(chosen)
        while rejected == chosen:
            rejected = finals[rng.randrange(len(finals))]
        out.append({"prompt": messages[:-1], "chosen": chosen, "rejected": rejected})
    return out


def main():
    rng = random.Random(7)
    for split in ("train", "validation"):
        rows = [json.loads(line) for line in (SALES / f"{split}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        path = SALES / f"preferences_{split}.jsonl"
        with path.open("w", encoding="utf-8", newline="\n") as f:
            for p in pairs(rows, rng):
                f.write(json.dumps(p, ensure_ascii=False) + "\n")
        print(f"{path.relative_to(ROOT)}: {len(rows)} pairs")


if __name__ == "__main__":
    main()
