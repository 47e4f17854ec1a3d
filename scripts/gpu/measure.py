"""Run a command and report its wall time, host peak RSS and the device's peak memory in use.

  python3 scripts/gpu/measure.py LABEL -- CMD ARGS...

The command's output passes through; the last line printed is one JSON object:
{"measure": LABEL, "rc", "wall_s", "host_peak_rss_gib" (the child's ru_maxrss), "device_peak_used_gib" (NVML,
whole device 0, sampled every 20 ms: the same measure the peer benchmark uses), "device_peaks_used_gib" (the same
for every device, in NVML's order: one entry per GPU of a multi-GPU run)}.
"""
import json, resource, subprocess, sys, threading, time

label, cmd = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
peak, stop = [0], threading.Event()
try:
    import pynvml
    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    peak = [0] * max(1, len(handles))

    def sample():
        while not stop.is_set():
            for i, h in enumerate(handles):
                peak[i] = max(peak[i], pynvml.nvmlDeviceGetMemoryInfo(h).used)
            time.sleep(0.02)
    threading.Thread(target=sample, daemon=True).start()
except Exception:  # no GPU: host figures only
    pass
t = time.time()
rc = subprocess.call(cmd)
wall = time.time() - t
stop.set()
time.sleep(0.05)
print(json.dumps({"measure": label, "rc": rc, "wall_s": round(wall, 1),
                  "host_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2),
                  "device_peak_used_gib": round(peak[0] / 2**30, 2),
                  "device_peaks_used_gib": [round(p / 2**30, 2) for p in peak]}), flush=True)
sys.exit(rc)
