"""Run a command and report its wall time, host peak RSS and the device's peak memory in use.

  python3 scripts/gpu/measure.py LABEL [--limit SECONDS] -- CMD ARGS...

The command's output passes through; the last line printed is one JSON object:
{"measure": LABEL, "rc", "wall_s", "host_peak_rss_gib" (the child's ru_maxrss), "device_peak_used_gib" (NVML,
whole device 0, sampled every 20 ms: the same measure the peer benchmark uses), "device_peaks_used_gib" (the same
for every device, in NVML's order: one entry per GPU of a multi-GPU run), "device_start_used_gib" (each device's
use before the command started: the driver's own share, ~0.6 GiB on an idle H200, and any other process's),
"process_peak_used_gib" (the peak of what device 0's compute processes hold by NVML, summed: the run's own memory,
context included, without the driver's share; summed because inside a container NVML's pids are the host's),
"device_peak_at_s" and "process_peak_at_s" (when the two peaks were first reached, in seconds from the start: set
against the command's own timeline, they tell whether a peak was loading or running)}.
With --limit the command is stopped after SECONDS (SIGTERM, SIGKILL 5 s later) and the line still comes, with rc 124
and "timed_out": true: the peaks of a run cut off are not lost, as they are under an outer `timeout`.
"""
import json, resource, subprocess, sys, threading, time

label, cmd = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
opts = sys.argv[2:sys.argv.index("--")]
limit = float(opts[opts.index("--limit") + 1]) if "--limit" in opts else None
peak, start, own, stop = [0], [0], [0], threading.Event()
peak_at, own_at, t0 = [0.0], [0.0], time.time()
try:
    import pynvml
    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    peak = [0] * max(1, len(handles))
    start = [pynvml.nvmlDeviceGetMemoryInfo(h).used for h in handles] or [0]

    def sample():
        while not stop.is_set():
            for i, h in enumerate(handles):
                used = pynvml.nvmlDeviceGetMemoryInfo(h).used
                if used > peak[i]:
                    peak[i] = used
                    if i == 0:
                        peak_at[0] = time.time() - t0
            try:
                procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handles[0])
                held = sum((p.usedGpuMemory or 0) for p in procs)
                if held > own[0]:
                    own[0], own_at[0] = held, time.time() - t0
            except Exception:  # a driver without per-process figures: the device-wide peak still comes
                pass
            time.sleep(0.02)
    threading.Thread(target=sample, daemon=True).start()
except Exception:  # no GPU: host figures only
    pass
t = t0 = time.time()
child, timed_out = subprocess.Popen(cmd), False
try:
    rc = child.wait(timeout=limit)
except subprocess.TimeoutExpired:
    timed_out = True
    child.terminate()
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    rc = 124
wall = time.time() - t
stop.set()
time.sleep(0.05)
result = {"measure": label, "rc": rc, "wall_s": round(wall, 1),
          "host_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2),
          "device_peak_used_gib": round(peak[0] / 2**30, 2),
          "device_peaks_used_gib": [round(p / 2**30, 2) for p in peak],
          "device_start_used_gib": [round(p / 2**30, 2) for p in start],
          "process_peak_used_gib": round(own[0] / 2**30, 2),
          "device_peak_at_s": round(peak_at[0], 1), "process_peak_at_s": round(own_at[0], 1)}
if limit is not None:
    result.update(timed_out=timed_out, limit_s=limit)
print(json.dumps(result), flush=True)
sys.exit(rc)
