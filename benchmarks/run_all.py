"""Run every benchmark at small sizes (`make bench`), then print each
one's ratio lines again, together, at the end.

Each benchmark runs in its own process (one at a time: they time themselves, and two would share the cores). The
sizes here are the small end of each script's range; run a script alone for its full sizes (benchmarks/README.md).

    python benchmarks/run_all.py            # the sizes below; several times longer when the cores are shared
    python benchmarks/run_all.py --quick    # tiny sizes, 1-2 minutes: checks that everything runs

On a CPU without native bf16 (neither AVX512_BF16 nor AMX) bf16 is emulated about 100x slower than float32, so
the bf16 runs are skipped there, with the reason; `--bf16` runs them anyway.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# script, arguments for `make bench`, arguments for --quick
BENCHMARKS = [
    (
        "bench_kd_loss.py",
        [
            "--vocab",
            "50257",
            "49152",
            "--batch",
            "8",
            "--seq",
            "256",
            "--reps",
            "1",
            "--variants",
            "full",
            "trl",
        ],
        ["--quick"],
    ),
    (
        "bench_kd_loss.py",
        ["--vocab", "49152", "--batch", "8", "--seq", "256", "--reps", "1", "--dtype", "bfloat16"],
        ["--quick", "--dtype", "bfloat16"],
    ),
    ("bench_step.py", ["--reps", "2"], ["--quick", "--no-memory"]),
    ("bench_counterfactual.py", ["--reps", "1"], ["--quick", "--reps", "1"]),
    (
        "bench_generation.py",
        ["--prompts", "18", "--samples", "1", "--max-new-tokens", "16"],
        ["--quick"],
    ),
    ("bench_teacher_cache.py", ["--reps", "3", "--blocks", "8", "--top-k", "64"], ["--quick", "--reps", "1"]),
    ("bench_data.py", ["--docs", "5000", "--reps", "3"], ["--quick"]),
]


BOTH_PRECISIONS = {"bench_step.py": ["--precisions", "no", "bf16"]}
"""With --bf16: what a script that times float32 only where bf16 is emulated gets, to time both. A run whose own
arguments ask for `--dtype bfloat16` is skipped where bf16 is emulated, unless --bf16."""


def is_ratio_line(line: str) -> bool:
    return "(target " in line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="+", default=None, help="script names to run, e.g. bench_generation.py")
    p.add_argument(
        "--bf16", action="store_true", help="run the bf16 benchmarks on a CPU that emulates bf16 too"
    )
    a = p.parse_args(argv)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from _common import native_bf16

    native, why = native_bf16()
    skip_bf16 = not native and not a.bf16
    if skip_bf16:
        print(
            f"bf16 is emulated here ({why}), about 100x slower than float32: float32 only (--bf16 runs both)"
        )
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    summary: list[str] = []
    failed: list[str] = []
    t_all = time.perf_counter()
    for script, args, quick_args in BENCHMARKS:
        if a.only and script not in a.only:
            continue
        args = quick_args if a.quick else args
        if skip_bf16 and "bfloat16" in args:
            summary.append(f"{script} {' '.join(args)}: skipped (bf16 is emulated here)")
            continue
        cmd = [
            sys.executable,
            str(HERE / script),
            *args,
            *(BOTH_PRECISIONS.get(script, []) if a.bf16 else []),
        ]
        print(f"\n######## {' '.join(['python', 'benchmarks/' + script, *cmd[2:]])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines = []
        for line in proc.stdout:  # stream, so a long run shows progress
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
        rc = proc.wait()
        took = time.perf_counter() - t0
        if rc != 0:
            failed.append(script)
            summary.append(f"{script}: FAILED (exit {rc}) after {took:.0f} s")
            continue
        summary.append(f"{script} ({took:.0f} s):")
        summary.extend("  " + line for line in lines if is_ratio_line(line))
    print(f"\n######## summary ({time.perf_counter() - t_all:.0f} s in all)")
    for line in summary:
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
