"""Calls the CUDA caching allocator's getDeviceStats/resetPeakStats through its vtable with ctypes, as the C# reader
(src/Quant/Kernels/CudaAllocatorStats.cs) does, and compares the figures with torch.cuda.memory_stats() around a
1 GiB allocation. Usage: python3 verify.py LAYOUT_JSON (from layout.cpp; the C# table's 2.11 numbers when absent).
Prints one JSON object."""
import ctypes
import json
import os
import sys

import torch

# The C# table's numbers for 2.11 (CudaAllocatorLayout.cs), used only when layout.cpp could not be compiled.
ASSUMED = {"get_device_stats_slot": 9, "reset_peak_stats_slot": 11, "device_stats_bytes": 976,
           "allocated_bytes_offset": 384, "reserved_bytes_offset": 480, "source": "assumed (C# table)"}
GET_ALLOCATOR = "_ZN3c1012GetAllocatorERKNS_10DeviceTypeE"  # c10::GetAllocator(c10::DeviceType const&)
CUDA = 1  # c10::DeviceType::CUDA
GIB = 1 << 30


class DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def where(address):
    """The shared object (and symbol) an address lies in, from dladdr."""
    try:
        dladdr = ctypes.CDLL(None).dladdr
    except AttributeError:  # glibc before 2.34 keeps dladdr in libdl
        dladdr = ctypes.CDLL("libdl.so.2").dladdr
    info = DlInfo()
    if dladdr(ctypes.c_void_p(address), ctypes.byref(info)) == 0:
        return None
    return {"file": info.dli_fname.decode() if info.dli_fname else None,
            "symbol": info.dli_sname.decode() if info.dli_sname else None}


def main():
    layout = dict(ASSUMED)
    if len(sys.argv) > 1 and os.path.exists(sys.argv[1]):
        with open(sys.argv[1]) as f:
            layout = json.load(f)
        layout["source"] = "layout.cpp"
    report = {"torch": torch.__version__, "layout": layout}
    lib = os.path.join(os.path.dirname(torch.__file__), "lib", "libc10.so")
    c10 = ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    get_allocator = c10[GET_ALLOCATOR]
    get_allocator.restype = ctypes.c_void_p
    get_allocator.argtypes = [ctypes.POINTER(ctypes.c_int8)]

    torch.cuda.init()
    warm = torch.empty(1, device="cuda")  # the allocator's per-device state exists after a first allocation
    device_type = ctypes.c_int8(CUDA)
    allocator = get_allocator(ctypes.byref(device_type))
    vtable = ctypes.c_void_p.from_address(allocator).value
    get_slot, reset_slot = layout["get_device_stats_slot"], layout["reset_peak_stats_slot"]
    get_fn = ctypes.c_void_p.from_address(vtable + 8 * get_slot).value
    reset_fn = ctypes.c_void_p.from_address(vtable + 8 * reset_slot).value
    report["allocator"] = {"object": where(allocator), "vtable": where(vtable),
                           "get_device_stats": where(get_fn), "reset_peak_stats": where(reset_fn)}
    # Itanium ABI, x86-64 SysV: the hidden return-buffer pointer first, then `this`, then the int8 device index.
    get_stats = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int8)(get_fn)
    reset_peak = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int8)(reset_fn)
    device = torch.cuda.current_device()

    def ours():
        buf = ctypes.create_string_buffer(layout["device_stats_bytes"] + 64)
        returned = get_stats(ctypes.addressof(buf), allocator, device)

        def q(offset):
            return int.from_bytes(buf.raw[offset:offset + 8], "little", signed=True)
        a, r = layout["allocated_bytes_offset"], layout["reserved_bytes_offset"]
        return {"allocated_current": q(a), "allocated_peak": q(a + 8), "reserved_current": q(r),
                "reserved_peak": q(r + 8), "returned_buffer": returned == ctypes.addressof(buf)}

    def theirs():
        s = torch.cuda.memory_stats(device)
        return {"allocated_current": s["allocated_bytes.all.current"], "allocated_peak": s["allocated_bytes.all.peak"],
                "reserved_current": s["reserved_bytes.all.current"], "reserved_peak": s["reserved_bytes.all.peak"]}

    phases = []

    def phase(name):
        torch.cuda.synchronize()
        o, t = ours(), theirs()
        same = all(o[k] == t[k] for k in t)
        phases.append({"phase": name, "ours": o, "torch": t, "equal": same})

    phase("start")
    big = torch.empty(GIB, dtype=torch.uint8, device="cuda")
    phase("after 1 GiB allocated")
    del big
    phase("after freeing it")
    reset_peak(allocator, device)
    phase("after resetPeakStats (our slot)")
    report["phases"] = phases
    p = {x["phase"]: x for x in phases}
    grew = p["after 1 GiB allocated"]["ours"]["allocated_current"] - p["start"]["ours"]["allocated_current"]
    after_reset = p["after resetPeakStats (our slot)"]["ours"]
    report["checks"] = {
        "all_phases_equal_torch": all(x["equal"] for x in phases),
        "allocated_grew_by_1gib": grew == GIB,
        "peak_reset_to_current": after_reset["allocated_peak"] == after_reset["allocated_current"]
                                 and after_reset["reserved_peak"] == after_reset["reserved_current"],
        "return_buffer_in_rax": all(x["ours"]["returned_buffer"] for x in phases),
    }
    report["ok"] = all(report["checks"].values())
    del warm
    print(json.dumps(report))


if __name__ == "__main__":
    main()
