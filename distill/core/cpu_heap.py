"""Keep freed large blocks in the process's heap on a CPU run, so big tensors are reused instead of re-faulted.

glibc's malloc serves every request above its mmap threshold (at most 32 MiB, whatever it has adapted to) with a
fresh `mmap` and returns it to the kernel on `free`. A CPU training step allocates and frees many tensors that
large: autocast's bf16 copy of each [V, H] output projection (56 MiB for SmolLM2's 49,152 x 576), the weight
gradients, the fused loss's [chunk, V] buffers, the AdamW temporaries. Each fresh mapping is zero-filled page by
page on first touch, and those page faults cost more than the arithmetic written into them: one `exp` over
[256, 49,152] float32 takes 40 ms into a fresh tensor and 10 ms into a reused one on 2 cores, and the embedded
default's method step took 3.89 s (bf16) / 6.95 s (float32) with glibc's defaults against 3.30 / 6.00 s with
freed blocks kept (benchmarks/README.md, "The bf16 weight gradient and the CPU heap").

`keep` sets `mallopt(M_MMAP_MAX, 0)` (every block comes from the heap, none from its own mapping) and
`mallopt(M_TRIM_THRESHOLD, 2 GiB)` (free memory at the heap's top is returned to the kernel only above 2 GiB), so
a block freed by one step is handed to the next without touching the kernel. The cost: the resident set does
not shrink after a peak (how much higher that peak can be through fragmentation has not been measured; the
benchmarks measure memory with the defaults). Requests above 64 MiB from threads other than the main one may
still be mapped by glibc. This is the effect that PyTorch's CPU performance guides
get by preloading jemalloc or TCMalloc, here with the allocator every Linux Python already has.

The setting is process-wide, like OMP_NUM_THREADS, so it is an environment variable rather than a recipe field:

    FAIRDISTILL_CPU_HEAP=auto     (default) keep, unless a CUDA device is available (the tensors live there)
    FAIRDISTILL_CPU_HEAP=keep     keep, also on a machine with a GPU
    FAIRDISTILL_CPU_HEAP=system   glibc's defaults

Where the C library is not glibc (macOS, musl), or another allocator is preloaded, nothing is changed and the
reason says so. `auto` asks whether CUDA is available (training) or whether the evaluation runs on a CUDA device.
"""

from __future__ import annotations

import ctypes
import os
import platform

from distill.core.errors import ConfigError

ENV = "FAIRDISTILL_CPU_HEAP"
SETTINGS = ("auto", "keep", "system")
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: the largest it accepts
"""Bytes of free memory at the heap's top above which glibc returns it to the kernel under `keep`."""

_applied = False


def setting_from_env(environ: dict[str, str] | None = None) -> str:
    """FAIRDISTILL_CPU_HEAP, checked; `auto` when unset."""
    value = (os.environ if environ is None else environ).get(ENV, "auto").strip().lower() or "auto"
    if value not in SETTINGS:
        raise ConfigError(
            f"{ENV}={value!r} is not a CPU heap setting: use auto (the default), keep or system"
        )
    return value


_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def _glibc():
    """(glibc through ctypes, or None; why not, when None). None where the C library is not glibc, where another
    allocator is preloaded (LD_PRELOAD: jemalloc, TCMalloc, mimalloc), or where mallopt cannot be found."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None, f"the C library is not glibc ({platform.system()}): its defaults"
    preload = os.environ.get("LD_PRELOAD", "")
    if other := next((a for a in _OTHER_ALLOCATORS if a in preload), None):
        return None, f"{other} is preloaded (LD_PRELOAD) and manages the heap: left as it is"
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None, "glibc's mallopt could not be loaded: its defaults"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return libc, ""


def configure_cpu_heap(setting: str | None = None, cuda: bool | None = None) -> tuple[bool, str]:
    """Apply `setting` (default: FAIRDISTILL_CPU_HEAP) to this process; (whether freed blocks are now kept, the
    reason, for the log). Idempotent; `cuda`: whether a CUDA device is available (default: ask torch)."""
    global _applied
    setting = setting_from_env() if setting is None else setting
    if setting not in SETTINGS:
        raise ConfigError(f"CPU heap setting {setting!r}: use one of {', '.join(SETTINGS)}")
    earlier = "but this process already keeps freed blocks (set earlier; it is not undone)"
    if setting == "system":
        return (
            _applied,
            f"{ENV}=system asked, {earlier}" if _applied else f"{ENV}=system: the C library's defaults",
        )
    if setting == "auto":
        if cuda is None:
            import torch

            cuda = torch.cuda.is_available()
        if cuda:
            if _applied:
                return True, f"auto on a CUDA run, {earlier}"
            return False, "auto: a CUDA device is available; the C library's defaults"
    libc, why_not = _glibc()
    if libc is None:
        return False, why_not
    if not _applied:
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        if not ok:
            return False, "glibc refused mallopt: its defaults"
        _applied = True
    how = "auto: CPU run" if setting == "auto" else f"{ENV}=keep"
    return True, f"{how}; glibc mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB; {ENV}=system turns it off"


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the kernel (glibc `malloc_trim(0)`) when this process keeps freed blocks;
    True when some were. `distill experiment` calls it after each run, so that a process that trains many runs in
    turn does not carry one run's free blocks into the next (a 24-layer grid's process, freed blocks kept, held
    5.0-5.6 GiB resident in samples taken during three consecutive runs, before this call existed)."""
    if not _applied:
        return False
    libc, _ = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))


def heap_log_line(kept: bool, why: str) -> str:
    """The run's log line for `configure_cpu_heap`'s result."""
    return f"cpu heap: {'freed blocks kept for reuse' if kept else 'as the C library sets it'} ({why})"
