"""Where the host's time goes, from an nsys trace taken with CPU sampling (`nsys profile --sample=cpu --export=sqlite`).

Prints, for the thread with the most samples (the training thread) and for all threads together: the share of
samples per module (libtorch_cpu.so, libtorch_cuda.so, libcuda.so, libLibTorchSharp.so, the .NET runtime, JIT code
without a module, ...), the top functions by self samples (the frame the CPU was in) and by inclusive samples (any
frame on the stack). JIT-compiled managed code has no symbols in nsys; it shows as unresolved addresses, counted
under "[managed or unresolved]". Usage: python3 host_samples.py TRACE.sqlite [TOP]
"""
import collections, sqlite3, sys

db = sqlite3.connect(sys.argv[1])
top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
if not {"COMPOSITE_EVENTS", "SAMPLING_CALLCHAINS", "StringIds"} <= tables:
    print("no CPU sampling tables in this trace; tables:", sorted(tables)); sys.exit(1)
cols = [r[1] for r in db.execute("PRAGMA table_info(SAMPLING_CALLCHAINS)")]
strings = dict(db.execute("SELECT id, value FROM StringIds"))
ce_cols = [r[1] for r in db.execute("PRAGMA table_info(COMPOSITE_EVENTS)")]
tid_col = next((c for c in ("globalTid", "threadId", "tid") if c in ce_cols), None)
print("COMPOSITE_EVENTS columns:", ce_cols, "| SAMPLING_CALLCHAINS columns:", cols)
thread_of = dict(db.execute(f"SELECT id, {tid_col} FROM COMPOSITE_EVENTS")) if tid_col else {}
unresolved = "unresolved" in cols
rows = db.execute("SELECT id, symbol, module, stackDepth" + (", unresolved" if unresolved else "") + " FROM SAMPLING_CALLCHAINS").fetchall()

def name(sym, mod, unres):
    m = strings.get(mod, "?").rsplit("/", 1)[-1]
    s = strings.get(sym, "?")
    if unres or s.startswith("0x") or m in ("", "?"):
        return "[managed or unresolved]", m or "[none]"
    return s[:120], m

stacks = collections.defaultdict(list)       # sample id -> [(depth, symbol, module)]
for r in rows:
    sid, sym, mod, depth = r[:4]
    s, m = name(sym, mod, r[4] if unresolved else 0)
    stacks[sid].append((depth, s, m))
by_thread = collections.Counter(thread_of.get(sid) for sid in stacks)
main_tid = by_thread.most_common(1)[0][0]
print(f"samples: {len(stacks)} in {len(by_thread)} threads; the busiest thread has {by_thread[main_tid]}")
print("threads by samples:", [c for _, c in by_thread.most_common(8)])

for label, ids in (("training thread", [i for i in stacks if thread_of.get(i) == main_tid]), ("all threads", list(stacks))):
    n = len(ids)
    self_sym, self_mod, incl = collections.Counter(), collections.Counter(), collections.Counter()
    for i in ids:
        frames = sorted(stacks[i])
        d0, s0, m0 = frames[0]
        self_sym[(s0, m0)] += 1
        self_mod[m0] += 1
        for key in {(s, m) for _, s, m in frames}:
            incl[key] += 1
    print(f"\n== {label}: {n} samples ==")
    print("-- self samples by module --")
    for m, c in self_mod.most_common(15):
        print(f"{100 * c / n:6.2f}%  {m}")
    print(f"-- top {top} functions by self samples --")
    for (s, m), c in self_sym.most_common(top):
        print(f"{100 * c / n:6.2f}%  {m:28.28s} {s}")
    print(f"-- top {top} functions by inclusive samples --")
    for (s, m), c in incl.most_common(top):
        print(f"{100 * c / n:6.2f}%  {m:28.28s} {s}")
