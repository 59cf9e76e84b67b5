"""Which precision a run computes in: `train.mixed_precision` resolved for the machine at hand, with the reason.

`auto` picks bf16 autocast where the hardware multiplies bf16 natively and full precision elsewhere:

- a CUDA GPU that reports bf16 support (Ampere and later);
- a CPU with AVX512_BF16 or AMX-BF16 (Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later). There
  oneDNN's bf16 GEMMs run about 5x faster than float32 (789 vs 153 GFLOP/s at 2048^3 on 2 cores of the
  development machine), and a training step of the embedded default about 2x (benchmarks/README.md). A CPU
  without them emulates bf16 far below float32 speed (1.1 against 117 GFLOP/s at 2048^3 on 2 cores of an AMD
  EPYC with AVX2 only, torch 2.13), so `auto` keeps float32 there, and an explicit `bf16` on such a CPU is
  warned about (`emulated_bf16_warning`).

Under autocast the weights, the optimizer state and the loss terms stay float32: matmuls run in bf16, softmax,
logsumexp and the KL/CE sums accumulate in float32 (`distill.training.fused_loss`, `distill.training.losses`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""/proc/cpuinfo flags under which a CPU multiplies bf16 natively."""


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The CPU_BF16_FLAGS this CPU has (from /proc/cpuinfo; [] where there is none, e.g. macOS)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags") and ":" in line:
            flags.update(line.split(":", 1)[1].split())
    return [f for f in CPU_BF16_FLAGS if f in flags]


def resolve_mixed_precision(
    setting: str, cuda: bool | None = None, cpuinfo: str | None = None
) -> tuple[str, str]:
    """`train.mixed_precision` -> (what Accelerate gets: "no" | "bf16" | "fp16", the reason, for the log).

    `cuda`: whether the run is on a CUDA device (default: whether one is available); `cpuinfo`: the text of
    /proc/cpuinfo (default: read it)."""
    if setting != "auto":
        return setting, f"train.mixed_precision={setting}"
    if cuda is None:
        cuda = torch.cuda.is_available()
    if cuda:
        if torch.cuda.is_bf16_supported():
            return "bf16", f"auto: {torch.cuda.get_device_name()} supports bf16"
        return "no", f"auto: {torch.cuda.get_device_name()} has no bf16; full precision"
    flags = cpu_bf16_flags(cpuinfo)
    if flags:
        return "bf16", f"auto: the CPU has {' and '.join(flags)}"
    return "no", f"auto: the CPU has neither {' nor '.join(CPU_BF16_FLAGS)}; full precision"


def emulated_bf16_warning(
    mixed_precision: str, cpu: bool | None = None, cpuinfo: str | None = None
) -> str | None:
    """A warning for a resolved "bf16" on a CPU that has none of CPU_BF16_FLAGS (None otherwise).

    `cpu`: whether the run computes on the CPU (default: when no CUDA device is available); accelerators are
    never warned about here.

    Such a request is honoured (it is how fp32 and bf16 numerics are compared on any machine), but its matmuls
    run emulated, about 100x slower than float32: a run that takes minutes in float32 would take hours."""
    if mixed_precision != "bf16":
        return None
    if cpu is None:
        cpu = not torch.cuda.is_available()
    if not cpu or cpu_bf16_flags(cpuinfo):
        return None
    return (
        f"train.mixed_precision=bf16 on a CPU with neither {' nor '.join(CPU_BF16_FLAGS)}: its bf16 matmuls are "
        "emulated, about 100x slower than float32; set train.mixed_precision=auto (float32 here) unless the "
        "point is bf16 numerics"
    )


def autocast_dtype(mixed_precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved setting ("no" -> None)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)


def autocast(device: torch.device | str, mixed_precision: str):
    """An autocast context for a resolved setting on `device` (a null context for "no")."""
    dtype = autocast_dtype(mixed_precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def active_autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype in force on `device`'s type right now, or None when autocast is off."""
    device_type = torch.device(device).type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None
