#!/usr/bin/env python3
"""Writes src/Models/Tokenization/UnicodeNfc.data: the Unicode Character Database facts that canonical composition
(NFC, Unicode Standard Annex #15) needs, from Python's unicodedata (its Unicode version is the file's first line).

The .NET runtime cannot normalize in globalization-invariant mode (QLoraNet runs invariant), so the tokenizers whose
tokenizer.json asks for an NFC normalizer (Qwen2) use QLoraNet.Models.Tokenization.UnicodeNfc over this table.
Lines (hex code points):
  D cp a [b]   canonical decomposition of cp (one or two code points; Hangul syllables are algorithmic, not listed)
  C first last ccc   canonical combining class ccc (non-zero) for the range first..last
  X cp         cp decomposes to two code points but is excluded from composition (a composition exclusion)
"""
import os
import unicodedata as u

out = os.path.join(os.path.dirname(__file__), "..", "..", "src", "Models", "Tokenization", "UnicodeNfc.data")
lines = [f"# Unicode {u.unidata_version} canonical decompositions, combining classes and composition exclusions; made by scripts/unicode/make_nfc_data.py"]
for cp in range(0x110000):
    if 0xAC00 <= cp <= 0xD7A3:
        continue
    d = u.decomposition(chr(cp))
    if not d or d.startswith("<"):
        continue
    parts = d.split()
    lines.append("D " + " ".join([f"{cp:X}"] + parts))
    if len(parts) == 2 and u.normalize("NFC", chr(cp)) != chr(cp):
        lines.append(f"X {cp:X}")
start = prev = None
ccc = 0
for cp in range(0x110001):
    c = u.combining(chr(cp)) if cp < 0x110000 else 0
    if start is not None and (c != ccc or cp != prev + 1):
        lines.append(f"C {start:X} {prev:X} {ccc}")
        start = None
    if c and start is None:
        start, ccc = cp, c
    prev = cp
with open(out, "w", encoding="ascii", newline="\n") as f:
    f.write("\n".join(lines) + "\n")
print(out, len(lines), "lines")
