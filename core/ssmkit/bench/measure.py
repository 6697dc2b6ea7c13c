"""Timing and peak-memory helpers shared by the benchmarks (no registration here).

- :func:`median_ms` times one callable or several side by side (interleaved, one call of each
  per round, so on a shared or throttling machine they see the same conditions). On CUDA it
  uses CUDA events; by default the GPU is idle when the start event is recorded, so the time
  includes the host work before the first kernel (what the caller of an isolated op waits for),
  and ``device_only`` queues a ~1 ms spin kernel first so the host work overlaps it. On the CPU
  the clock is the wall clock or, with ``clock="cpu"``, the process's CPU time, which on a shared
  machine measures the work rather than the wait (use it with OMP_NUM_THREADS=1: with more
  threads it also counts OpenMP spin-waiting).
- :func:`peak_bytes` is the extra memory a call needs at its peak: the CUDA allocator's peak, or
  on Linux the process's peak resident set.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from collections.abc import Callable

import torch

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
SPIN_CYCLES = 2_000_000  # about 1 ms at the ~2 GHz of an H100 or H200


def median_ms(fns: Callable[[], object] | dict[str, Callable[[], object]], device: torch.device | str = "cpu",
              reps: int = 5, warmup: int = 1, clock: str = "wall", device_only: bool = False):
    """Median milliseconds of ``fns()`` over ``reps`` calls after ``warmup`` untimed ones; for a
    dict of callables, a dict of medians (the variants interleaved)."""
    single = callable(fns)
    calls = {"": fns} if single else dict(fns)
    device = torch.device(device)
    now = CLOCKS[clock]
    cuda = device.type == "cuda"
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    if cuda:
        torch.cuda.synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, fn in calls.items():
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                if device_only:
                    torch.cuda._sleep(SPIN_CYCLES)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end))
            else:
                t0 = now()
                fn()
                times[name].append((now() - t0) * 1e3)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    return medians[""] if single else medians


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def mmap_threshold(nbytes: int) -> None:
    """Serve every allocation of ``nbytes`` or more by mmap (glibc; a no-op elsewhere).

    glibc keeps freed blocks below the threshold in its heap, so the resident set would not fall
    when a tensor is freed and a peak reading would count dead tensors. Memory is measured with a
    small threshold (64 KiB: every tensor mmapped and returned at once); timing runs with a large
    one, because an mmap and its page faults per tensor would dominate CPU times.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, nbytes)  # M_MMAP_THRESHOLD: fixed, no dynamic growth
        libc.mallopt(-1, nbytes)  # M_TRIM_THRESHOLD: give freed heap tops back too
        libc.malloc_trim(0)  # return what the heap holds now, so the baseline is live memory
    except (OSError, AttributeError):
        pass


def peak_bytes(fn: Callable[[], object], device: torch.device | str = "cpu",
               restore_threshold: int = 32 << 20) -> int | None:
    """Bytes ``fn()`` adds at its peak over what was live just before it, or None where the
    platform cannot tell (a CPU peak needs Linux's /proc/self/clear_refs).

    On the CPU the kernel's high-water mark (VmHWM) is reset to the current resident set, glibc is
    told to mmap blocks of 64 KiB or more for the call (:func:`mmap_threshold`) and is set to
    ``restore_threshold`` afterwards.
    """
    device = torch.device(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    mmap_threshold(64 << 10)
    try:
        base = _status_kib("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            return None
        if base is None:
            return None
        fn()
        peak = _status_kib("VmHWM")
        return None if peak is None else max(0, peak - base) * 1024
    finally:
        mmap_threshold(restore_threshold)


__all__ = ["CLOCKS", "median_ms", "mmap_threshold", "peak_bytes"]
