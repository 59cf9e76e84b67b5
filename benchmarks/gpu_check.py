"""The GPU check: everything about fairdistill that needs a CUDA device, measured and tested in one command (under
8 minutes on one H100), every number written to one JSON file and a short Markdown table.

    PYTHONPATH=. bash scripts/gpu_check.sh               # on a machine with one CUDA GPU
    PYTHONPATH=. bash scripts/gpu_check.sh --dry-run     # anywhere: what can be checked without one

Parts, each run even when an earlier one failed (its failure is recorded, and the exit status is then 1):

    prerequisites             the modules the check imports, with the command that fetches a missing one
    tests                     `pytest -m gpu tests/gpu`: the device-dependent paths against their references
    bench:gpt2-6L             one training step (fwd + bwd + AdamW) of GPT-2 (124M) -> 6 layers, and
    bench:gpt2-large-18L      of GPT-2 large (774M) -> 18 layers, random weights from GPT2Config, bf16 autocast,
                              B x T = 8 x 1,024: plain CE, cached plain KD, the method, the live-teacher plain KD
                              and the peers (the HF distiller's full-vocabulary KL; TRL's GKD loss where trl
                              imports); tokens/s, peak memory and MFU of a bf16 GEMM peak measured in the same run
    train:debug:single_gpu    `distill train` through `accelerate launch` (recipes/accelerate/single_gpu.yaml) of
    train:gpt2:single_gpu     recipes/debug.yaml and of the GPT-2 recipe on a random GPT-2 for a few steps,
    train:debug:fsdp          then through FSDP on one process (fsdp_8gpu.yaml, --num_processes 1)
    train:gpt2:fsdp
    resume:debug:single_gpu   a run killed after its first checkpoint and started again: it must resume

Without a CUDA device the check is a dry run unless `--force` (which then runs everything at tiny sizes on the
CPU): it checks the arguments, the prerequisites, that the CUDA tests are collected and skipped, the step
benchmark at tiny sizes for one step, that Accelerate resolves each launch and each recipe validates with its
overrides, and the result JSON against its schema; every part is marked "dry-run". Output: $OUT (or --out;
default ./gpu_check_out): gpu_check.json, gpu_check.md, gpu_check.log (every command's output).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the checkout's `distill`, PYTHONPATH or not

from _gpu_check_env import ROOT, Ctx, device_info, prerequisites, tail  # noqa: E402
from _gpu_check_report import SCHEMA_ID, validate, write  # noqa: E402

PART_NAMES = [
    "prerequisites",
    "tests",
    "bench:gpt2-6L",
    "bench:gpt2-large-18L",
    "train:debug:single_gpu",
    "train:gpt2:single_gpu",
    "train:debug:fsdp",
    "train:gpt2:fsdp",
    "resume:debug:single_gpu",
]


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/gpu_check.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--dry-run",
        action="store_true",
        help="check what can be checked without a GPU (the default without CUDA)",
    )
    how.add_argument(
        "--force", action="store_true", help="run every part even without CUDA (on the CPU, at tiny sizes)"
    )
    p.add_argument(
        "--tiny", action="store_true", help="tiny widths (same depths and vocabulary): a quick pass"
    )
    p.add_argument(
        "--out",
        default=os.environ.get("OUT") or "gpu_check_out",
        help="output folder (default: $OUT, else ./gpu_check_out)",
    )
    p.add_argument(
        "--work",
        default=None,
        help="folder for runs, caches and saved teachers, kept (default: a new temporary one)",
    )
    p.add_argument(
        "--keep-work", action="store_true", help="keep the work folder (default: removed at the end)"
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="PART",
        help=f"run only these parts, of: {' '.join(PART_NAMES)}",
    )
    a = p.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    unknown = [n for n in a.only or [] if n not in PART_NAMES]
    if unknown:
        p.error(f"--only {' '.join(unknown)}: no such part; choose from {' '.join(PART_NAMES)}")
    # resolved where the command was typed, before the check moves to the checkout
    for flag in ("out", "work"):
        value = getattr(a, flag)
        if value is not None:
            path = Path(value).expanduser().resolve()
            if path.exists() and not path.is_dir():
                p.error(
                    f"--{flag} {value}: exists and is not a folder; give a folder (it is created if missing)"
                )
            setattr(a, flag, path)
    return a


def part_functions(ctx: Ctx) -> dict:
    """Each part's name -> a function of no arguments returning {"status", "detail", "numbers"[, "log"]}."""
    from _gpu_check_parts import bench_part, tests_part
    from _gpu_check_runs import resume_part, train_part

    return {
        "tests": lambda: tests_part(ctx),
        "bench:gpt2-6L": lambda: bench_part(ctx, "gpt2-6L"),
        "bench:gpt2-large-18L": lambda: bench_part(ctx, "gpt2-large-18L"),
        "train:debug:single_gpu": lambda: train_part(ctx, "debug", "single_gpu"),
        "train:gpt2:single_gpu": lambda: train_part(ctx, "gpt2", "single_gpu"),
        "train:debug:fsdp": lambda: train_part(ctx, "debug", "fsdp"),
        "train:gpt2:fsdp": lambda: train_part(ctx, "gpt2", "fsdp"),
        "resume:debug:single_gpu": lambda: resume_part(ctx),
    }


def run_part(name: str, fn) -> dict:
    """Run one part; an exception is its failure (recorded with the traceback's end), never the check's end."""
    print(f"---- {name}", flush=True)
    t0 = time.perf_counter()
    try:
        result = fn()
    except Exception as e:
        result = {
            "status": "fail",
            "detail": f"{type(e).__name__}: {e}"[:500],
            "numbers": {},
            "log": tail(traceback.format_exc()),
        }
    result = {"name": name, "seconds": round(time.perf_counter() - t0, 2), **result}
    result.setdefault("log", "")
    print(f"     {result['status']}: {result['detail']} ({result['seconds']:.0f} s)", flush=True)
    return result


def prerequisites_part(found: dict, mode: str) -> dict:
    """The prerequisites as a part: fail when a required module is missing (each printed with its fix)."""
    for name in found["missing"] + found["optional_missing"]:
        what = "missing" if name in found["missing"] else "optional, missing"
        print(f"{what}: {name}: {found['hints'][name]}", file=sys.stderr)
    if found["missing"]:
        return {"status": "fail", "detail": f"missing: {', '.join(found['missing'])}", "numbers": found}
    extra = (
        f"; optional, missing: {', '.join(found['optional_missing'])}" if found["optional_missing"] else ""
    )
    status = "dry-run" if mode == "dry-run" else "pass"
    return {"status": status, "detail": f"all required modules import{extra}", "numbers": found}


def choose_mode(a, cuda: bool) -> str:
    if a.dry_run or (not cuda and not a.force):
        return "dry-run"
    return "gpu" if cuda else "forced-cpu"


def check(a) -> dict:
    """Run the check described by the parsed arguments `a`; the result (see _gpu_check_report.SCHEMA)."""
    started, t0 = datetime.datetime.now().astimezone().isoformat(timespec="seconds"), time.perf_counter()
    found = prerequisites()
    versions = {"python": found["python"], **found["versions"]}
    cuda = False
    if not found["missing"]:
        import torch

        cuda = torch.cuda.is_available()
    mode = choose_mode(a, cuda)
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    work = a.work or Path(tempfile.mkdtemp(prefix="fairdistill-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(mode=mode, tiny=a.tiny or mode != "gpu", out=out, work=work)
    ctx.log.write_text(f"fairdistill GPU check, {mode}, {started}\n")
    print(f"GPU check: {mode}{' (tiny sizes)' if ctx.tiny else ''}; output {out}; work {work}", flush=True)
    chosen = [n for n in PART_NAMES if a.only is None or n in a.only]
    parts = (
        [run_part("prerequisites", lambda: prerequisites_part(found, mode))]
        if "prerequisites" in chosen
        else []
    )
    if found["missing"]:
        why = f"not run: missing {', '.join(found['missing'])}"
        parts += [
            {"name": n, "status": "fail", "seconds": 0.0, "detail": why, "numbers": {}, "log": ""}
            for n in chosen
            if n != "prerequisites"
        ]
    else:
        ctx.device = device_info()
        fns = part_functions(ctx)
        parts += [run_part(n, fns[n]) for n in chosen if n != "prerequisites"]
    if not a.keep_work and not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "schema": SCHEMA_ID,
        "mode": mode,
        "tiny": ctx.tiny,
        "ok": all(p["status"] != "fail" for p in parts),
        "started": started,
        "seconds": round(time.perf_counter() - t0, 1),
        "command": " ".join(["scripts/gpu_check.sh", *a.argv]),
        "device": ctx.device or {"name": "unknown", "cuda": None},
        "versions": versions,
        "parts": parts,
    }


def main(argv=None) -> int:
    a = parse(argv)
    os.chdir(ROOT)
    result = check(a)
    bad = validate(result)
    if bad:  # a result that breaks its own schema is a failure of the check itself
        result["ok"] = False
        result["schema_problems"] = bad
    js, md = write(result, a.out)
    print(md.read_text())
    print(f"written: {js}, {md}, {a.out / 'gpu_check.log'}")
    for line in bad:
        print(f"schema: {line}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
