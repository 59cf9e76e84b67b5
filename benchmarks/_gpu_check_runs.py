"""The GPU check's training runs: `distill train` through `accelerate launch` (`python -m distill.launch`), as
`make distill` runs it, on one GPU and through FSDP on one process, and a run killed after its first checkpoint
and started again with the same command, which must resume.

Two recipes: recipes/debug.yaml (the tiny random Llama, seconds) and recipes/gpt2_to_distilgpt2.yaml with a random
GPT-2 (124M) saved to a local folder (benchmarks/_gpt2.py) as its teacher and the project's own text as its transfer
set, for a few steps. Tracking is off (tracking.wandb=false) and nothing is evaluated after training. A dry run
resolves each launch's Accelerate options as the launcher does and validates each recipe with its overrides as
`distill check` does, without training.
"""

from __future__ import annotations

import math
import re
import shlex
import time
from pathlib import Path

from _gpu_check_env import Ctx, end_group, run_logged, start, tail

LAUNCH = {
    "single_gpu": ["--config_file", "recipes/accelerate/single_gpu.yaml"],
    # the shipped 8-GPU FSDP2 config on one process: the FSDP code path, sharding aside
    "fsdp": ["--config_file", "recipes/accelerate/fsdp_8gpu.yaml", "--num_processes", "1"],
}
# what Accelerate must resolve each launch to (the launcher's own arguments after its config file is read)
RESOLVED = {
    "single_gpu": {"use_fsdp": False, "multi_gpu": False, "num_processes": 1, "mixed_precision": "bf16"},
    "fsdp": {"use_fsdp": True, "num_processes": 1, "mixed_precision": "bf16", "fsdp_version": "2"},
}
TEXT = [
    "recipes/data/opening_lines.txt",
    "recipes/data/occupation_lines.txt",
    "recipes/data/debug_corpus.txt",
]
STEPS = {"debug": 4, "gpt2": 4, "resume": 8}


def common(ctx: Ctx, out: Path) -> list[str]:
    return [
        f"run.output_dir={out}",
        f"data.cache_dir={ctx.work / 'cache'}",
        "tracking.wandb=false",
        "eval.suite=null",
    ]


def gpt2_teacher(ctx: Ctx) -> Path:
    """The random GPT-2 (124M; 32 wide when tiny) the gpt2 runs distil, saved once under the work folder."""
    from _gpt2 import gpt2_tokenizer, save_random_gpt2

    folder = ctx.work / ("gpt2-tiny-random" if ctx.tiny else "gpt2-random")
    if not (folder / "config.json").is_file():
        save_random_gpt2(folder, "gpt2", gpt2_tokenizer(ctx.work / "cache"), tiny=ctx.tiny)
    return folder


def recipe_args(ctx: Ctx, recipe: str, out: Path, steps: int) -> list[str]:
    """`train RECIPE key=value ...` for recipe "debug" or "gpt2", writing under `out`."""
    args = [*common(ctx, out), f"train.max_steps={steps}"]
    if recipe == "debug":
        return ["train", "recipes/debug.yaml", *args]
    data = [
        "data.source=files",
        f"data.files=[{', '.join(TEXT)}]",
        "data.streaming=false",
        "data.max_documents=null",
        "data.block_size=128",
        "data.val_fraction=0.1",
        "data.max_val_blocks=4",
        "data.num_workers=0",
    ]
    train = ["train.max_tokens=null", "train.micro_batch_size=4", "train.grad_accum=2", "train.log_every=1"]
    train += ["train.eval_every=2", "train.probe_every=2", "train.save_every=2"]
    teacher = [f"teacher.name_or_path={gpt2_teacher(ctx)}", f"teacher.cache={ctx.work / 'teacher_cache'}"]
    return ["train", "recipes/gpt2_to_distilgpt2.yaml", *args, *teacher, *data, *train]


def launch_command(ctx: Ctx, config: str, args: list[str]) -> list[str]:
    return [ctx.python, "-m", "distill.launch", *LAUNCH[config], "--", *args]


def resolve_launch(config: str) -> dict:
    """The launch's options as `accelerate launch` resolves them from the config file (its own code), checked
    against RESOLVED; raises naming what differs."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    parsed = launch_command_parser().parse_args([*LAUNCH[config], "-m", "distill.cli", "train", "-"])
    args = _validate_launch_command(parsed)[0]
    got = {k: getattr(args, k, None) for k in RESOLVED[config]}
    got = {k: str(v) if k == "fsdp_version" else v for k, v in got.items()}
    if got != RESOLVED[config]:
        raise AssertionError(f"{LAUNCH[config]} resolves to {got}, expected {RESOLVED[config]}")
    return got


def check_recipe(args: list[str]) -> dict:
    """`distill check` of `train RECIPE overrides` in this process: the config loader and every check train makes
    before it loads a model; {"recipe", "steps", "teacher", "student_layers"}."""
    from distill.core.recipe import load_config
    from distill.training.preflight import preflight

    cfg = load_config(args[1], args[2:])
    preflight(cfg)
    return {
        "recipe": args[1],
        "steps": cfg.train.max_steps,
        "teacher": cfg.teacher.name_or_path,
        "student_layers": cfg.student.layers,
    }


def log_checks(ctx: Ctx, config: str, text: str) -> list[dict]:
    """What the run's log must say on this device: the precision `auto` resolved to, the CPU heap left to the C
    library where a GPU holds the tensors, and the loss path (fused; unfused on full logits under FSDP)."""
    want = []
    if (
        config != "fsdp" or ctx.cuda
    ):  # Accelerate turns FSDP on only on an accelerator: on a CPU it runs unsharded
        fsdp = config == "fsdp"
        want.append(
            (
                "loss path",
                "loss: chunked over full logits" if fsdp else "loss: fused with the output projection",
            )
        )
    if ctx.cuda:
        want += [
            ("precision", f"precision: bf16 autocast (auto: {ctx.device.get('name')} supports bf16)"),
            ("cpu heap", "cpu heap: as the C library sets it (auto: a CUDA device is available"),
        ]
    return [{"check": name, "ok": line in text, "expected": line} for name, line in want]


def metrics_checks(run_dir: Path, steps: int) -> tuple[list[dict], dict]:
    """Checks on the run folder (final/ written, every step logged once up to `steps`, finite losses) and its
    numbers (final loss, mean logged tokens/s)."""
    from distill.core.tracking import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    logged = [r["step"] for r in rows]
    train = [r for r in rows if "train/loss" in r]
    losses = [r["train/loss"] for r in train]
    speed = [r["train/tokens_per_s"] for r in train if "train/tokens_per_s" in r]
    checks = [
        {"check": "final/ written", "ok": (run_dir / "final" / "config.json").is_file()},
        {
            "check": f"steps 1..{steps} logged once each",
            "ok": sorted(r["step"] for r in train) == list(range(1, steps + 1))
            and len(logged) == len(set(logged)),
        },
        {
            "check": "losses finite",
            "ok": bool(losses) and all(isinstance(x, float) and math.isfinite(x) for x in losses),
        },
    ]
    numbers = {
        "steps": max(logged, default=0),
        "final_loss": losses[-1] if losses else None,
        "tokens_per_s": sum(speed) / len(speed) if speed else None,
        "val_loss": next((r["val/loss"] for r in reversed(rows) if "val/loss" in r), None),
    }
    return checks, numbers


def _verdict(ctx: Ctx, checks: list[dict], numbers: dict, text: str, what: str) -> dict:
    bad = [c["check"] for c in checks if not c["ok"]]
    numbers["checks"] = checks
    if bad:
        return {
            "status": "fail",
            "detail": f"{what}; failed: {', '.join(bad)}",
            "numbers": numbers,
            "log": tail(text),
        }
    return {"status": "pass", "detail": what, "numbers": numbers}


def train_part(ctx: Ctx, recipe: str, config: str) -> dict:
    """`distill train` of `recipe` through the `config` launch; its log and run folder checked."""
    out = ctx.work / "runs" / f"{recipe}_{config}"
    args = recipe_args(ctx, recipe, out, STEPS[recipe])
    cmd = launch_command(ctx, config, args)
    numbers = {"command": shlex.join(["python", *cmd[1:]])}
    if ctx.mode == "dry-run":
        numbers.update(accelerate=resolve_launch(config), recipe=check_recipe(args))
        return {
            "status": "dry-run",
            "detail": "launch resolved, recipe and overrides valid",
            "numbers": numbers,
        }
    t0 = time.perf_counter()
    rc, text = run_logged(ctx, f"train:{recipe}:{config}", cmd, timeout=300)
    numbers["wall_s"] = time.perf_counter() - t0
    run_dir = out / ("debug" if recipe == "debug" else "gpt2_to_distilgpt2")
    checks, found = metrics_checks(run_dir, STEPS[recipe])
    numbers.update(found)
    checks = [{"check": "exit status 0", "ok": rc == 0, "got": rc}, *checks, *log_checks(ctx, config, text)]
    speed = f", {found['tokens_per_s']:.0f} tokens/s" if found["tokens_per_s"] else ""
    loss = f"{found['final_loss']:.4f}" if found["final_loss"] is not None else None
    result = _verdict(ctx, checks, numbers, text, f"{found['steps']} steps, final loss {loss}{speed}")
    if config == "fsdp" and not ctx.cuda and result["status"] == "pass":
        result["status"] = "skipped"
        result["detail"] += "; not FSDP: Accelerate enables it only on an accelerator, so this ran unsharded"
    return result


def _first_checkpoint(proc, ckpts: Path, timeout: float) -> bool:
    """Wait until a complete checkpoint exists under `ckpts` (or `proc` ends, or `timeout` seconds pass)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and any((p / "complete").is_file() for p in ckpts.iterdir()):
            return True
        time.sleep(0.02)
    return False


def resume_part(ctx: Ctx) -> dict:
    """The debug run through the single-GPU launch with a checkpoint every step, each held open for a second
    (FAIRDISTILL_PAUSE_IN_CHECKPOINT), killed (SIGKILL, the whole launch) once the first is complete and the
    second half-written; then the same command again, which must resume from the first and finish."""
    out = ctx.work / "runs" / "resume"
    args = recipe_args(ctx, "debug", out, STEPS["resume"]) + ["train.save_every=1", "train.probe_every=0"]
    cmd = launch_command(ctx, "single_gpu", args)
    numbers = {"command": shlex.join(["python", *cmd[1:]])}
    if ctx.mode == "dry-run":
        numbers.update(accelerate=resolve_launch("single_gpu"), recipe=check_recipe(args))
        return {
            "status": "dry-run",
            "detail": "launch resolved, recipe and overrides valid",
            "numbers": numbers,
        }
    run_dir = out / "debug"
    proc = start(ctx, cmd, ctx.work / "logs" / "resume_killed.txt", FAIRDISTILL_PAUSE_IN_CHECKPOINT="1")
    reached = _first_checkpoint(proc, run_dir / "checkpoints", timeout=240)
    ended_early = proc.poll() is not None
    end_group(proc)
    from distill.core.rundir import RunDir

    latest = RunDir(run_dir).latest()
    numbers["killed_after"] = latest.name if latest else None
    rc, text = run_logged(ctx, "resume:debug:single_gpu", cmd, timeout=300)
    m = re.search(r"resuming \S+ from (\S+) \(step (\d+)\)", text)
    numbers["resumed_from"] = m.group(1) if m else None
    checks, found = metrics_checks(run_dir, STEPS["resume"])
    numbers.update(found)
    checks = [
        {"check": "killed while training, after a complete checkpoint", "ok": reached and not ended_early},
        {"check": "exit status 0", "ok": rc == 0, "got": rc},
        {
            "check": "resumed from the last complete checkpoint",
            "ok": bool(m) and m.group(1) == numbers["killed_after"],
        },
        *checks,
    ]
    what = f"killed after {numbers['killed_after']}, resumed from {numbers['resumed_from']}, {found['steps']} steps"
    return _verdict(ctx, checks, numbers, text, what)
