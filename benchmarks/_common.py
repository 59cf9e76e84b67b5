"""Shared helpers for the benchmarks: device choice, interleaved timing, peak memory, and the ratio line.

Peak memory on CPU: each variant runs in a fresh child process (`python <script> --child <variant> ...`) that
builds its inputs, resets the kernel's high-water mark of its resident set (`/proc/self/clear_refs` <- 5, Linux
>= 4.0), runs forward + backward once, and reports VmHWM minus the resident set right before the run. That counts
every page the run touched beyond its inputs, whoever allocated it (torch's CPU allocator, BLAS workspaces), and a
separate process keeps one variant's freed-but-cached pages from hiding the next one's. `tracemalloc` would see
none of torch's memory. On CUDA the same process is used: `torch.cuda.max_memory_allocated` after
`reset_peak_memory_stats`, minus what was allocated before the run.

Heap: every benchmark process sets up its CPU heap as the trainer does (`distill/core/cpu_heap.py`: freed blocks kept
for reuse), so the timings are the trainer's; `FAIRDISTILL_CPU_HEAP=system` times the C library's defaults. The
memory children always run with the defaults: with freed blocks kept, the warm-up's pages stay resident and the
high-water mark would not see the measured run touch them again.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from distill.core.cpu_heap import configure_cpu_heap  # noqa: E402

# Every benchmark process (the memory children too) sets up its heap as the trainer does, so the timings are
# the trainer's; FAIRDISTILL_CPU_HEAP=system measures glibc's defaults instead (distill/core/cpu_heap.py).
HEAP_KEPT, HEAP_REASON = configure_cpu_heap()


# The students the model benchmarks can run: the embedded default's (24 layers: SmolLM2-135M without the 6 layers
# of lowest block influence that `student.prune` picks on the default's seed-0 blocks) and the 6-layer compression
# recipe's. The layer list is fixed here so a benchmark needs no transfer set to score layers on.
DEFAULT_DROPPED = (13, 14, 15, 17, 25, 26)
STUDENTS = {
    "24L": (
        "smollm2-135m_to_24L.yaml",
        [
            "student.prune.drop=0",
            f"student.layers=[{','.join(str(i) for i in range(30) if i not in DEFAULT_DROPPED)}]",
        ],
    ),
    "6L": ("smollm2-135m_to_6L.yaml", []),
}


def native_bf16(device: torch.device | None = None) -> tuple[bool, str]:
    """Whether `device` (default: the GPU when there is one, else the CPU) multiplies bf16 natively (a CUDA GPU
    with bf16, or a CPU with AVX512_BF16 or AMX), and why. Elsewhere bf16 is emulated, about 100x slower than
    float32 (`distill.core.precision`), and the benchmarks time float32 only unless told otherwise."""
    from distill.core.precision import CPU_BF16_FLAGS, cpu_bf16_flags

    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(0)
        return (
            torch.cuda.is_bf16_supported(),
            f"{name} {'supports' if torch.cuda.is_bf16_supported() else 'has no'} bf16",
        )
    flags = cpu_bf16_flags()
    if flags:
        return True, f"the CPU has {' and '.join(flags)}"
    return False, f"the CPU has neither {' nor '.join(CPU_BF16_FLAGS)}"


def student_recipe(name: str) -> tuple[Path, list[str]]:
    """(recipe path, overrides) of a `--student` choice."""
    recipe, overrides = STUDENTS[name]
    return ROOT / "recipes" / recipe, list(overrides)


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], object]], reps: int, device: torch.device, warmup: int = 1
) -> dict[str, dict[str, float]]:
    """Median seconds of each fn: {"wall": {name: s}, "cpu": {name: s}}.

    Variants alternate within every repetition (A B A B ...), so a noisy neighbour on a shared machine slows all of
    them alike instead of whichever happened to run then. "cpu" is this process's CPU time over all its threads:
    on a shared machine it leaves out time spent waiting for a core, so it is the steadier measure of cost there;
    "wall" is what a user waits for, and what the ratios use."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync(device)
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {
        "wall": {k: statistics.median(v) for k, v in wall.items()},
        "cpu": {k: statistics.median(v) for k, v in cpu.items()},
    }


# ---- model FLOP utilisation ------------------------------------------------------------------------------


def matmul_peak(device, dtype, n: int, reps: int) -> tuple[float, float]:
    """FLOP/s of an n^3 GEMM in `dtype` (median of `reps`): per second of wall time, and per second of this
    process's CPU time (all threads), the steadier one on a shared machine."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    c = torch.mm(a, b)  # the product goes into this buffer: the GEMM's own speed, without a fresh allocation
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        torch.mm(a, b, out=c)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 2 * n**3 / statistics.median(wall), 2 * n**3 / statistics.median(cpu)


def matmul_params(model) -> int:
    """Weights that multiply each token once (every 2-D weight but the input embedding, plus the output
    projection when it is tied to it)."""
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings().weight
    n = sum(p.numel() for p in model.parameters() if p.dim() == 2 and p is not emb)
    return n + (out.numel() if out is emb else 0)


# ---- CPU peak memory, measured in a child process ------------------------------------------------------------


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_peak_bytes(run: Callable[[], object]) -> int:
    """In a child process: bytes of resident memory `run` adds at its peak over what is resident before it."""
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = _rss_kb("VmRSS")
    run()
    return (_rss_kb("VmHWM") - before) * 1024


def report_child(result: dict) -> None:
    """The child's one line of output, read back by `run_child`."""
    print("CHILD_RESULT " + json.dumps(result), flush=True)


def run_child(script: str, args: list[str]) -> dict:
    """Run `python script *args` in a fresh process and return the dict it reported."""
    # The C library's own heap in the child: with freed blocks kept (distill/core/cpu_heap.py) the warm-up's pages stay
    # resident, and the high-water mark would not see the measured run touch them again.
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        FAIRDISTILL_CPU_HEAP="system",
    )
    proc = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, env=env, cwd=str(ROOT), check=False
    )
    for line in proc.stdout.splitlines():
        if line.startswith("CHILD_RESULT "):
            return json.loads(line[len("CHILD_RESULT ") :])
    raise RuntimeError(
        f"child {script} {' '.join(args)} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    )


def gpu_peak(run: Callable[[], object], device: torch.device) -> tuple[int, int]:
    """(torch.cuda.max_memory_allocated while `run` runs, what it adds at its peak over what was allocated
    before it), in bytes."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return peak, peak - before


def gpu_peak_bytes(run: Callable[[], object], device: torch.device) -> int:
    """Bytes `run` adds on the GPU at its peak over what was allocated before it."""
    return gpu_peak(run, device)[1]


# ---- output ----------------------------------------------------------------------------------------------------


def ratio_line(name: str, value: float, target: float, at_most: bool = True) -> str:
    """`name 0.21 (target <= 0.30) met`: the line each benchmark prints last."""
    ok = value <= target if at_most else value >= target
    op = "<=" if at_most else ">="
    return f"{name} {value:.3g} (target {op} {target:g}) {'met' if ok else 'MISSED'}"


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    heap = "freed blocks kept" if HEAP_KEPT else "C library defaults"
    return (
        f"CPU, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"heap: {heap} ({HEAP_REASON})"
    )
