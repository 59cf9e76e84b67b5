"""What `bench_step.py` prints of its measured steps, and the JSON file it writes with `--json`."""

from __future__ import annotations

import json
from pathlib import Path

from _common import machine, matmul_params


def print_rows(rows: list[dict], reps: int) -> None:
    print(
        f"\nmedian of {reps} interleaved repetitions; MFU = model FLOPs / time / matmul peak of the same "
        "precision, by wall time and by CPU time (all threads; leaves out waiting for a core)"
    )
    head = ("step", "precision", "wall s", "cpu s", "GFLOP", "GFLOP/s", "tokens/s", "MFU", "MFU cpu")
    print("  " + " ".join(f"{h:>9}" for h in head))
    for r in rows:
        cells = (
            r["step"],
            r["precision"],
            f"{r['wall_s']:.3f}",
            f"{r['cpu_s']:.3f}",
            f"{r['flop'] / 1e9:.1f}",
        )
        cells += (f"{r['flop'] / r['wall_s'] / 1e9:.1f}", f"{r['tokens_per_s']:.0f}")
        cells += (f"{100 * r['mfu']:.1f}%", f"{100 * r['mfu_cpu']:.1f}%")
        print("  " + " ".join(f"{c:>9}" for c in cells), flush=True)
    if any(r["peak_bytes"] is not None for r in rows):
        print(
            "\npeak memory of a step (torch.cuda.max_memory_allocated; + what the step adds to what it found)"
        )
        for r in rows:
            print(
                f"  {r['step']:>10} {r['precision']:>9} {r['peak_bytes'] / 2**20:9.1f} MiB "
                f"(+{r['added_bytes'] / 2**20:.1f})"
            )


def write_json(a, s, device, models: str, rows, skipped, mem, lines) -> None:
    """Everything printed, as one JSON file at `a.json` (the GPU check reads it)."""
    result = {
        "machine": machine(),
        "device": str(device),
        "models": models,
        "student": a.student,
        "quick": a.quick,
        "batch": a.batch,
        "seq": a.seq,
        "reps": a.reps,
        "twin_rows": s.k,
        "attention": s.attention,
        "student_matmul_params": matmul_params(s.student),
        "teacher_matmul_params": matmul_params(s.teacher),
        "vocab": s.student.config.vocab_size,
        "matmul_peak": {"n": a.peak_size, "flop_per_s": a.peaks, "flop_per_cpu_s": a.cpu_peaks},
        "steps": rows,
        "skipped": skipped,
        "cpu_added_bytes": {f"{n}/{p}": b for (n, p), b in mem.items()},
        "ratios": lines,
    }
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
