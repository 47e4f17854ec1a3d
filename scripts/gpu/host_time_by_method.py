"""Host time of the training step by .NET method, from a .NET EventPipe sample-profiler trace.

Record on the GPU machine (no tool needed there: the runtime writes the trace itself), e.g.
    DOTNET_EnableEventPipe=1 DOTNET_EventPipeOutputPath=/tmp/t.nettrace \\
    DOTNET_EventPipeConfig='Microsoft-DotNETCore-SampleProfiler:0:5,Microsoft-Windows-DotNETRuntime:0x4c14fccbd:5' \\
      dotnet QLoraNet.dll bench train --model /tmp/llama7b --seq 512 --batch 4 --steps 10 --warmup 3
then here: dotnet-trace convert /tmp/t.nettrace --format speedscope -o /tmp/t  (dotnet tool install -g dotnet-trace)
    python3 scripts/gpu/host_time_by_method.py /tmp/t.speedscope.json STEPS [TOP]

The sampler stops the threads every ~1 ms and records their managed stacks; speedscope's converter holds a stack until
the next sample, so gaps longer than 2.5 ms (a thread with no managed frames: libtorch's autograd engine thread
waiting between backward passes) count as idle here, not as the last stack. The window is the last run of
TrainStep.Run frames on the main thread (the timed steps, which the converter merges), divided by STEPS. Per thread:
the leaf kinds (CPU_TIME = running managed code, UNMANAGED_CODE_TIME = in native code, libtorch or CUDA), then the
methods by self and by inclusive CPU_TIME. libtorch runs CUDA backward on its own device thread: the custom
autograd functions' backward and the checkpointed layers' recomputation are on that thread, not the main one.
"""
import collections, json, sys

d = json.load(open(sys.argv[1])); frames = [f['name'] for f in d['shared']['frames']]
nsteps = float(sys.argv[2]); top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
def short(n): return n.split('!', 1)[-1][:150]
profs = [p for p in d['profiles'] if p['type'] == 'evented']
main = max(profs, key=lambda p: len(p['events']))
runs, opened = [], None
for e in main['events']:
    if 'TrainStep.Run' in frames[e['frame']]:
        if e['type'] == 'O': opened = e['at']
        elif opened is not None: runs.append((opened, e['at'])); opened = None
if not runs: sys.exit("no TrainStep.Run frames in the trace")
lo, hi = runs[-1]
print(f"window {hi - lo:.0f} ms, {nsteps:g} steps: {(hi - lo) / nsteps:.1f} ms a step")
for p in profs:
    self_t, incl_t, leaf_t = collections.Counter(), collections.Counter(), collections.Counter()
    stack, last = [], None
    for e in p['events']:
        t = e['at']
        if last is not None and stack and lo <= last < hi:
            dt = min(t, hi) - last
            if dt <= 2.5:
                names = [short(frames[i]) for i in stack]
                leaf_t[names[-1]] += dt
                if names[-1] == 'CPU_TIME' and len(names) > 1:
                    self_t[names[-2]] += dt
                    for n in set(names[:-1]): incl_t[n] += dt
        last = t
        if e['type'] == 'O': stack.append(e['frame'])
        else:
            while stack and stack[-1] != e['frame']: stack.pop()
            if stack: stack.pop()
    if not leaf_t: continue
    print(f"\n== {p['name']}: " + ", ".join(f"{k} {v / nsteps:.2f} ms/step" for k, v in leaf_t.most_common(2)))
    print("-- managed self time, ms/step --")
    for n, t in self_t.most_common(top): print(f"{t / nsteps:7.2f}  {n}")
    print("-- managed inclusive time, ms/step --")
    for n, t in incl_t.most_common(top): print(f"{t / nsteps:7.2f}  {n}")
