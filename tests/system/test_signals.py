"""Graceful stop: SIGTERM mid-run saves a checkpoint, exits 143 with the resume command, and the resume finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import debug_overrides

from distill.core.files import read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def _args(tmp_path, teacher_dir, steps):
    extra = [
        f"train.max_steps={steps}",
        "train.save_every=0",
        "train.eval_every=0",
        "train.probe_every=0",
        "tracking.wandb=false",
    ]
    return ["recipes/debug.yaml", *debug_overrides(tmp_path, teacher_dir, *extra)]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resumes(tmp_path, teacher_dir):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "distill.cli", "train", *_args(tmp_path, teacher_dir, 60)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "runs" / "debug" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if metrics.is_file() and any(r["step"] >= 3 for r in read_jsonl(metrics)):
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended early: {proc.communicate()[1][-2000:]}")
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    # the hint repeats the command that was run, not another one that would do the same
    ran = "python -m distill.cli train recipes/debug.yaml"
    assert "stopped by SIGTERM at step" in err and f"Resume with the same command: {ran}" in err
    run_dir = tmp_path / "runs" / "debug"
    latest = (run_dir / "checkpoints" / "latest").read_text()
    stopped_at = int(latest.split("_")[1])
    assert 3 <= stopped_at < 60
    assert (run_dir / "checkpoints" / latest / "complete").is_file()
    assert not (run_dir / "final").exists()

    # resume (fewer total steps would change the schedule; same command) -- run in-process, to the end
    from distill.core.recipe import load_config
    from distill.training.loop import train

    cfg = load_config(_args(tmp_path, teacher_dir, 60)[0], _args(tmp_path, teacher_dir, 60)[1:])
    train(cfg)
    steps = [r["step"] for r in read_jsonl(metrics)]
    assert steps[-1] == 60 and len(steps) == len(set(steps))
    assert (run_dir / "final" / "model.safetensors").is_file()
    assert json.loads((run_dir / "checkpoints" / "step_60" / "trainer_state.json").read_text())["step"] == 60
