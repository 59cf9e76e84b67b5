"""One training run is one W&B run: every launch, resume (offline too) and evaluation of a run directory logs into
the same run id, a rerun of a finished run opens none, and the end-of-run evaluation lands in the training run."""

from __future__ import annotations

import time

import pytest
from conftest import debug_overrides

from distill.core.files import read_jsonl
from distill.core.recipe import load_config
from distill.core.tracking import MetricsLog, wandb_run_id
from distill.training.loop import train

SMALL = ["n_per_prompt=1", "max_new_tokens=4", "n_boot=50", "device=cpu", "probe.max_professions=8"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(tmp_path, teacher_dir, *extra):
    return load_config(
        "recipes/debug.yaml",
        debug_overrides(tmp_path, teacher_dir, "tracking.mode=offline", "train.probe_every=0", *extra),
    )


def _offline_runs(run_dir):
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def _run_id(folder) -> str:
    """The run id in `offline-run-<date>_<time>-<id>`; W&B appends `-1`, `-2` when two launches of one run start
    within the same second."""
    return folder.name.split("-")[3]


def _logged(folder, *keys: bytes, timeout: float = 30.0) -> bytes:
    """The raw records of one offline W&B folder (keys are stored as plain strings), once all of `keys` are in it:
    W&B's writer process flushes a finished run's records shortly after `finish()` returns."""
    deadline = time.monotonic() + timeout
    while True:
        (f,) = folder.glob("run-*.wandb")
        data = f.read_bytes()
        if all(k in data for k in keys) or time.monotonic() > deadline:
            return data
        time.sleep(0.2)


@pytest.mark.slow
def test_resumes_and_the_evaluation_continue_one_wandb_run(tmp_path, teacher_dir, monkeypatch):
    from distill.reporting.evaluate import evaluate_checkpoint

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = _cfg(tmp_path, teacher_dir, "train.max_steps=4", "train.save_every=2")
    run_dir = train(cfg, stop_after=2)  # preempted after its step-2 checkpoint
    run_id = wandb_run_id(run_dir, create=False)
    assert run_id and [_run_id(p) for p in _offline_runs(run_dir)] == [run_id]

    train(cfg)  # the resume continues the same run id
    assert [_run_id(p) for p in _offline_runs(run_dir)] == [run_id, run_id]
    assert b"train/loss" in _logged(_offline_runs(run_dir)[1], b"train/loss")

    train(cfg)  # a rerun of the finished run trains nothing and opens no W&B run
    assert len(_offline_runs(run_dir)) == 2

    evaluate_checkpoint(run_dir, "quick", overrides=SMALL)  # `make eval` later: into the same run id
    runs = _offline_runs(run_dir)
    assert len(runs) == 3 and runs[-1].name.endswith(f"-{run_id}")
    keys = (
        b"eval/quick/probe/pronoun_gap",
        b"eval/quick/generations",
        b"eval/quick/probe/per_profession",
        b"eval/quick/figures/pronoun_gap",
    )
    logged = _logged(runs[-1], *keys)  # waits for W&B's writer to flush them
    for key in keys:
        assert key in logged, key


@pytest.mark.slow
def test_training_and_its_evaluation_in_one_process_share_one_wandb_folder(
    tmp_path, teacher_dir, monkeypatch
):
    """`distill train` with eval.suite: the training run stays open for the evaluation, which logs into it."""
    from distill.reporting.evaluate import evaluate_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = train(_cfg(tmp_path, teacher_dir, "train.max_steps=2"), keep_tracking=True)
    evaluate_run(run_dir, "quick", overrides=SMALL)
    (only,) = _offline_runs(run_dir)
    keys = (b"train/loss", b"eval/quick/probe/pronoun_gap", b"eval_teacher/quick/probe/pronoun_gap")
    logged = _logged(only, *keys)
    assert b"train/loss" in logged and b"eval/quick/probe/pronoun_gap" in logged
    assert b"eval_teacher/quick/probe/pronoun_gap" in logged  # the teacher's numbers next to the student's
    assert (run_dir / "eval" / "figures" / "pronoun_gap.pdf").is_file()


def test_the_run_id_is_kept_in_the_run_directory(tmp_path):
    assert wandb_run_id(tmp_path, create=False) is None
    first = wandb_run_id(tmp_path)
    assert len(first) == 8 and first.isalnum() and wandb_run_id(tmp_path) == first
    assert (tmp_path / "wandb" / "run_id").read_text().strip() == first
    other = tmp_path / "older"
    assert (
        wandb_run_id(other, adopt="debug-1733000000") == "debug-1733000000"
    )  # an id kept by an older version


def test_metrics_log_drops_lines_past_the_resumed_step(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    for s in (1, 2, 3):
        log.write(s, {"train/loss": float(s)})
    MetricsLog(tmp_path / "m.jsonl", resume_step=2)
    assert [r["step"] for r in read_jsonl(tmp_path / "m.jsonl")] == [1, 2]
