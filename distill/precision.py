"""Which precision a run computes in: `train.mixed_precision` resolved for the machine at hand, with the reason.

`auto` picks bf16 autocast where the hardware multiplies bf16 natively and full precision elsewhere:

- a CUDA GPU that reports bf16 support (Ampere and later);
- a CPU with AVX512_BF16 or AMX-BF16 (Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later). There
  oneDNN's bf16 GEMMs run about 5x faster than float32 (789 vs 153 GFLOP/s at 2048^3 on 2 cores of the
  development machine), and a training step of the embedded default about 2x (benchmarks/README.md). A CPU
  without them emulates bf16 at float32 speed or below, so `auto` keeps float32 there.

Under autocast the weights, the optimizer state and the loss terms stay float32: matmuls run in bf16, softmax,
logsumexp and the KL/CE sums accumulate in float32 (`distill.fused_loss`, `distill.losses`).
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
