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
from conftest import debug_overrides, list_checkpoints

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
    # between two steps, or between two micro-batches of one (that step dropped): the last whole step is saved
    assert "stopped by SIGTERM at step" in err or "stopped by SIGTERM during step" in err, err[-2000:]
    assert f"Resume with the same command: {ran}" in err
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


# ---- a signal between micro-batches, a second signal, a signal during the export ------------------------------


def _in_process(tmp_path, teacher_dir, *extra):
    from distill.core.recipe import load_config

    base = ["train.probe_every=0", "train.eval_every=0", "tracking.wandb=false", "train.grad_accum=4"]
    return load_config("recipes/debug.yaml", debug_overrides(tmp_path, teacher_dir, *base, *extra))


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final" / "model.safetensors"))


def test_a_signal_between_micro_batches_drops_the_step_and_the_resume_is_exact(
    tmp_path, teacher_dir, monkeypatch
):
    """SIGINT while step 3's second micro-batch computes: the step is dropped at the next micro-batch boundary, the
    state at the end of step 2 is saved (data position, augment draws and random states put back), and the resumed
    run ends with the same weights and losses as one that was never stopped."""
    import torch

    import distill.training.loop as loop
    from distill.training.lifecycle import TrainingStopped

    ref = loop.train(_in_process(tmp_path / "ref", teacher_dir, "train.max_steps=4"))
    real, calls = loop.student_loss_sums, []

    def signalling(*args, **kw):
        calls.append(1)
        if len(calls) == 2 * 4 + 2:  # step 3, micro-batch 2 of 4
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kw)

    monkeypatch.setattr(loop, "student_loss_sums", signalling)
    cfg = _in_process(tmp_path, teacher_dir, "train.max_steps=4", "train.save_every=0")
    with pytest.raises(TrainingStopped) as e:
        loop.train(cfg)
    assert e.value.exit_code == 130 and len(calls) == 10  # micro-batches 3 and 4 never ran
    assert "stopped by SIGINT during step 3/4 (its micro-batches so far were dropped); checkpoint" in str(
        e.value
    )
    run_dir = tmp_path / "runs" / "debug"
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_2"]
    monkeypatch.setattr(loop, "student_loss_sums", real)
    loop.train(cfg)
    a, b = _weights(ref), _weights(run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = {r["step"]: r["train/loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r}
    ref_losses = {r["step"]: r["train/loss"] for r in read_jsonl(ref / "metrics.jsonl") if "train/loss" in r}
    assert losses == ref_losses and sorted(losses) == [1, 2, 3, 4]


@pytest.mark.slow
def test_sigint_ends_a_long_accumulation_within_seconds(tmp_path, teacher_dir):
    """A step of 100,000 micro-batches (minutes on this model; the memory check lets it through, while the issue's
    10**9 is refused before anything starts, tests/unit/training/test_preflight.py) is left at the next
    micro-batch once SIGINT arrives: the run ends within seconds, saving nothing, since no step had ended."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    args = _args(tmp_path, teacher_dir, 2) + ["train.grad_accum=100000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "distill.cli", "train", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "runs" / "debug" / "metrics.jsonl"
    deadline = time.time() + 180
    while not metrics.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    time.sleep(2)  # inside step 1 (its micro-batches are being drawn or run)
    proc.send_signal(signal.SIGINT)
    sent = time.time()
    _, err = proc.communicate(timeout=120)
    assert time.time() - sent < 30, err[-2000:]  # generous for a shared CPU; the step itself takes minutes
    assert proc.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGINT during step 1/2 (its micro-batches so far were dropped)"), last
    assert "nothing was saved" in last
    assert not list_checkpoints(tmp_path / "runs" / "debug")


@pytest.mark.slow
def test_a_second_signal_stops_at_once_and_leaves_nothing_half_written(tmp_path, teacher_dir):
    """The first SIGINT arrives while checkpoint step_1 is being written (held open for a minute by the test hook),
    so it waits for the save; the second stops at once: the half-written checkpoint is removed, and the same
    command then runs the whole run with each step logged once."""
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
        FAIRDISTILL_PAUSE_IN_CHECKPOINT="60",
    )
    args = _args(tmp_path, teacher_dir, 3) + ["train.save_every=1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "distill.cli", "train", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = tmp_path / "runs" / "debug"
    tmp = run_dir / "checkpoints" / ".tmp_step_1"
    deadline = time.time() + 180
    while not (tmp / "loop_rng_0.pt").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGINT)
    time.sleep(1)
    assert proc.poll() is None  # the first signal waits for the save
    proc.send_signal(signal.SIGINT)
    sent = time.time()
    _, err = proc.communicate(timeout=120)
    assert time.time() - sent < 30 and proc.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        "stopped at once by a second SIGINT at step 1/3; what was being written was removed"
    )
    assert "Traceback" not in err and "Exception ignored" not in err
    assert not tmp.exists() and not list_checkpoints(run_dir) and not (run_dir / "run.lock").exists()

    from distill.core.recipe import load_config
    from distill.training.loop import train

    train(load_config(args[0], args[1:]))
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r] == [1, 2, 3]


@pytest.mark.parametrize("signals", [1, 2])
def test_ctrl_c_during_the_export(tmp_path, teacher_dir, monkeypatch, capsys, signals):
    """One SIGINT while final/ is written: the export finishes first (no KeyboardInterrupt inside a library's
    __del__), then the run stops with 130. Two: it stops at once and final/ is not left half-written; the same
    command writes it."""
    import distill.reporting.card as card
    from distill.cli import main

    real = card.write_card

    def interrupted(*a, **k):
        for _ in range(signals):
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(card, "write_card", interrupted)
    argv = ["train", *_args(tmp_path, teacher_dir, 2)]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err
    run_dir = tmp_path / "runs" / "debug"
    if signals == 1:
        assert (
            err.strip()
            .splitlines()[-1]
            .startswith(
                "stopped by SIGINT after the last step: final/ was written whole first and the run is complete"
            )
        )
        assert (run_dir / "final" / "README.md").is_file()
    else:
        assert "stopped at once by a second SIGINT at step 2/2" in err
        assert not (run_dir / "final").exists() and not list(run_dir.glob("final.tmp*"))
        monkeypatch.setattr(card, "write_card", real)
        assert main(argv) == 0
        assert (run_dir / "final" / "README.md").is_file()
