"""Keep freed large blocks in the process's heap on a CPU run, so big tensors are reused instead of re-faulted.

glibc's malloc serves every request above its mmap threshold (at most 32 MiB, whatever it has adapted to) with a
fresh `mmap` and returns it to the kernel on `free`. A CPU training step allocates and frees many tensors that
large: autocast's bf16 copy of each [V, H] output projection (56 MiB for SmolLM2's 49,152 x 576), the weight
gradients, the fused loss's [chunk, V] buffers, the AdamW temporaries. Each fresh mapping is zero-filled page by
page on first touch, and those page faults cost more than the arithmetic written into them: one `exp` over
[256, 49,152] float32 takes 40 ms into a fresh tensor and 10 ms into a reused one on 2 cores, and the embedded
default's method step took 3.89 s (bf16) / 6.95 s (float32) with glibc's defaults against 3.30 / 6.00 s with
freed blocks kept (benchmarks/README.md, "The CPU heap").

`keep` sets `mallopt(M_MMAP_MAX, 0)` (every block comes from the heap, none from its own mapping) and
`mallopt(M_TRIM_THRESHOLD, 2 GiB)` (free memory at the heap's top is returned to the kernel only above 2 GiB), so
a block freed by one step is handed to the next without touching the kernel. The cost: the resident set does
not shrink after a peak; the peak itself is what it was. This is the effect that PyTorch's CPU performance guides
get by preloading jemalloc or TCMalloc, here with the allocator every Linux Python already has.

The setting is process-wide, like OMP_NUM_THREADS, so it is an environment variable rather than a recipe field:

    FAIRDISTILL_CPU_HEAP=auto     (default) keep, unless a CUDA device is available (the tensors live there)
    FAIRDISTILL_CPU_HEAP=keep     keep, also on a machine with a GPU
    FAIRDISTILL_CPU_HEAP=system   glibc's defaults

Where the C library is not glibc (macOS, musl) nothing is changed and the reason says so.
"""

from __future__ import annotations

import ctypes
import os
import platform

from distill.errors import ConfigError

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


def _glibc():
    """The process's C library through ctypes, or None where it is not glibc (no mallopt to call)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


def configure_cpu_heap(setting: str | None = None, cuda: bool | None = None) -> tuple[bool, str]:
    """Apply `setting` (default: FAIRDISTILL_CPU_HEAP) to this process; (whether freed blocks are now kept, the
    reason, for the log). Idempotent; `cuda`: whether a CUDA device is available (default: ask torch)."""
    global _applied
    setting = setting_from_env() if setting is None else setting
    if setting not in SETTINGS:
        raise ConfigError(f"CPU heap setting {setting!r}: use one of {', '.join(SETTINGS)}")
    if setting == "system":
        return _applied, f"{ENV}=system: the C library's defaults" + (
            " (already changed earlier in this process)" if _applied else ""
        )
    if setting == "auto":
        if cuda is None:
            import torch

            cuda = torch.cuda.is_available()
        if cuda:
            return _applied, "auto: a CUDA device is available; the C library's defaults"
    libc = _glibc()
    if libc is None:
        return False, f"the C library is not glibc ({platform.system()}): its defaults"
    if not _applied:
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        if not ok:
            return False, "glibc refused mallopt: its defaults"
        _applied = True
    how = "auto: CPU run" if setting == "auto" else f"{ENV}=keep"
    return True, f"{how}; glibc mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB; {ENV}=system turns it off"
