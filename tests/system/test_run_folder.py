"""A run folder belongs to one run: two concurrent runs in one folder (the second refused at once, naming the
first), and a finished or started run never overwritten by another recipe, whatever was deleted (checkpoints/,
config.yaml, identity.json). Each test checks that what the first run wrote is still there, byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import debug_overrides, list_checkpoints

from distill.core.errors import ConfigError, FairDistillError
from distill.core.files import read_jsonl
from distill.core.recipe import load_config
from distill.training.loop import train

ROOT = Path(__file__).resolve().parents[2]


def _args(tmp_path, teacher_dir, *extra):
    base = ["train.save_every=1", "train.probe_every=0", "train.eval_every=0", "tracking.wandb=false"]
    return debug_overrides(tmp_path, teacher_dir, *base, *extra)


def _cfg(tmp_path, teacher_dir, *extra):
    return load_config("recipes/debug.yaml", _args(tmp_path, teacher_dir, "train.max_steps=3", *extra))


def _digests(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _cli(tmp_path, teacher_dir, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "distill.cli",
        "train",
        "recipes/debug.yaml",
        *_args(tmp_path, teacher_dir, *extra),
    ]


@pytest.mark.slow
def test_a_second_run_in_the_same_folder_is_refused_at_once(tmp_path, teacher_dir):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run_dir = tmp_path / "runs" / "debug"
    first = subprocess.Popen(
        _cli(tmp_path, teacher_dir, "train.max_steps=200"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 180
        while not (run_dir / "metrics.jsonl").is_file() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert first.poll() is None, first.communicate()[1][-2000:]
        # the same recipe, and another one (the kd.alpha=0.9): both refused before writing anything
        for extra in ([], ["kd.alpha=0.9"]):
            second = subprocess.run(
                _cli(tmp_path, teacher_dir, "train.max_steps=200", *extra),
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert second.returncode == 2, second.stderr[-2000:]
            last = second.stderr.strip().splitlines()[-1]
            assert last.startswith(
                f"error: run folder {run_dir} is in use by process {first.pid} on host "
            ), last
            assert "run.name=<new name>" in last
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=300)
    assert first.returncode == 130, err[-2000:]
    # the first run's log is its own: each step once, in order
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[0] == 0
    assert not (run_dir / "run.lock").exists()  # released when the run ended


def test_a_finished_run_whose_checkpoints_were_deleted_is_not_replaced(tmp_path, teacher_dir):
    import shutil

    run_dir = train(_cfg(tmp_path, teacher_dir))
    shutil.rmtree(run_dir / "checkpoints")
    kept = _digests(run_dir)
    with pytest.raises(ConfigError, match=r"different recipe \(kd.alpha: 0.5 there, 0.9 now\)"):
        train(_cfg(tmp_path, teacher_dir, "kd.alpha=0.9"))
    assert _digests(run_dir) == kept
    # the same recipe cannot continue it either: it would train from step 0 over final/
    with pytest.raises(
        FairDistillError, match=r"is finished \(final/ holds its student\) but has no checkpoint"
    ):
        train(_cfg(tmp_path, teacher_dir))
    assert _digests(run_dir) == kept


@pytest.mark.parametrize("deleted", ["config.yaml", "checkpoints+config.yaml"])
def test_a_started_run_whose_config_yaml_was_deleted_keeps_its_checkpoints(tmp_path, teacher_dir, deleted):
    import shutil

    run_dir = train(_cfg(tmp_path, teacher_dir), stop_after=2)
    (run_dir / "config.yaml").unlink()
    if "checkpoints" in deleted:
        shutil.rmtree(run_dir / "checkpoints")
    kept = _digests(run_dir)
    with pytest.raises(ConfigError, match="different recipe"):
        train(_cfg(tmp_path, teacher_dir, "kd.alpha=0.9"))
    assert _digests(run_dir) == kept
    train(_cfg(tmp_path, teacher_dir))  # the same recipe resumes (or starts over) to the end
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r]
    assert steps == [1, 2, 3]


def test_a_folder_whose_identity_was_deleted_is_refused(tmp_path, teacher_dir):
    run_dir = train(_cfg(tmp_path, teacher_dir), stop_after=2)
    (run_dir / "identity.json").unlink()
    (run_dir / "config.yaml").unlink()
    kept = _digests(run_dir)
    with pytest.raises(FairDistillError, match=r"holds files of a run \(.*\) but not identity.json"):
        train(_cfg(tmp_path, teacher_dir))
    assert _digests(run_dir) == kept


def test_an_empty_config_yaml_does_not_stop_a_resume_and_is_written_again(tmp_path, teacher_dir):
    run_dir = train(_cfg(tmp_path, teacher_dir), stop_after=2)
    (run_dir / "config.yaml").write_text("")
    train(_cfg(tmp_path, teacher_dir))
    assert [p.name for p in list_checkpoints(run_dir)][-1] == "step_3"
    assert load_config(run_dir / "config.yaml").kd.alpha == 0.5


def test_the_lock_is_released_however_the_run_ends(tmp_path, teacher_dir, monkeypatch):
    import distill.training.prepare as prepare

    run_dir = tmp_path / "runs" / "debug"
    train(_cfg(tmp_path, teacher_dir), stop_after=1)  # left as a preempted job
    assert not (run_dir / "run.lock").exists()
    with pytest.raises(ConfigError, match="different recipe"):  # refused once the lock was taken
        train(_cfg(tmp_path, teacher_dir, "kd.alpha=0.9"))
    assert not (run_dir / "run.lock").exists()

    def bug(*args):
        held = json.loads((run_dir / "run.lock").read_text())  # held while the run loads
        assert held["pid"] == os.getpid()
        raise RuntimeError("a bug while loading")

    with monkeypatch.context() as m:
        m.setattr(prepare, "_load", bug)
        with pytest.raises(RuntimeError, match="a bug while loading"):
            train(_cfg(tmp_path, teacher_dir))
    assert not (run_dir / "run.lock").exists()
    train(_cfg(tmp_path, teacher_dir))
    assert not (run_dir / "run.lock").exists() and (run_dir / "final" / "config.json").is_file()


def test_check_reports_what_train_would_refuse_about_the_folder(tmp_path, teacher_dir, capsys):
    from distill.cli import EXIT_USER_ERROR, main
    from distill.core.ownership import RunLock
    from distill.core.rundir import RunDir

    run_dir = train(_cfg(tmp_path, teacher_dir), stop_after=1)
    kept = _digests(run_dir)
    args = ["check", "recipes/debug.yaml", *_args(tmp_path, teacher_dir, "train.max_steps=3")]
    assert main([*args, "kd.alpha=0.9"]) == EXIT_USER_ERROR
    assert "different recipe (kd.alpha: 0.5 there, 0.9 now)" in capsys.readouterr().err
    with RunLock(RunDir(run_dir)):
        assert main(args) == EXIT_USER_ERROR
        assert f"is in use by process {os.getpid()}" in capsys.readouterr().err
    assert main(args) == 0
    assert _digests(run_dir) == kept  # check wrote nothing
