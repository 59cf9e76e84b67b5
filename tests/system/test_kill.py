"""SIGKILL at random points, including in the middle of writing a checkpoint: every restart resumes from the last
complete checkpoint, and the final weights and logged losses equal an uninterrupted run's exactly (CPU)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import debug_overrides, list_checkpoints

from distill.core.files import read_jsonl
from distill.core.recipe import load_config
from distill.training.loop import train

ROOT = Path(__file__).resolve().parents[2]
STEPS = 40  # enough that a fast machine is still training when the kills arrive


def _args(out, teacher_dir):
    extra = [f"train.max_steps={STEPS}", "train.save_every=1", "train.keep_last=2", "train.eval_every=5"]
    return debug_overrides(out, teacher_dir, *extra, "train.probe_every=0", "tracking.wandb=false")


def _start(out, teacher_dir, pause=0.0):
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), FAIRDISTILL_PAUSE_IN_CHECKPOINT=str(pause)
    )
    cmd = [sys.executable, "-m", "distill.cli", "train", "recipes/debug.yaml", *_args(out, teacher_dir)]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _wait(proc, cond, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_equals_uninterrupted(tmp_path, teacher_dir):
    ref = train(load_config("recipes/debug.yaml", _args(tmp_path / "ref", teacher_dir)))

    out = tmp_path / "killed"
    run_dir = out / "runs" / "debug"
    ckpts = run_dir / "checkpoints"
    rng = random.Random(0)
    kills = []

    def last_step():
        m = run_dir / "metrics.jsonl"
        try:
            return max((r["step"] for r in read_jsonl(m)), default=-1) if m.is_file() else -1
        except ValueError:  # a line being written right now
            return -1

    # 1) mid-training, at a random step
    proc = _start(out, teacher_dir)
    target = rng.randint(2, 5)
    assert _wait(proc, lambda: last_step() >= target)
    time.sleep(rng.uniform(0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills.append(("training", last_step()))

    # 2) in the middle of writing a checkpoint (the hook holds it half-written)
    proc = _start(out, teacher_dir, pause=2.0)
    assert _wait(proc, lambda: ckpts.is_dir() and any(p.name.startswith(".tmp_") for p in ckpts.iterdir()))
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    half = [p for p in ckpts.iterdir() if p.name.startswith(".tmp_")]
    assert half, "killed while a checkpoint was half-written"
    kills.append(("checkpoint", last_step()))
    good = list_checkpoints(run_dir)
    assert good and all((p / "complete").is_file() for p in good)

    # 3) during start-up or the first steps after a resume, at a random time
    proc = _start(out, teacher_dir)
    time.sleep(rng.uniform(1.0, 4.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills.append(("random", last_step()))

    # finally run to the end
    proc = _start(out, teacher_dir)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]

    from safetensors.torch import load_file

    a = load_file(str(ref / "final" / "model.safetensors"))
    b = load_file(str(run_dir / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la = {r["step"]: r.get("train/loss") for r in read_jsonl(ref / "metrics.jsonl")}
    lb = {r["step"]: r.get("train/loss") for r in read_jsonl(run_dir / "metrics.jsonl")}
    assert la == lb, kills
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert len(steps) == len(set(steps))
    assert len(kills) == 3
