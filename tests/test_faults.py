"""Fault guards: non-finite loss, unwritable or full output directory, secrets kept out of configs and logs."""

from __future__ import annotations

import pytest
import torch
from conftest import debug_overrides, make_gpt2

from distill.config import load_config
from distill.errors import ConfigError, FairDistillError
from distill.tracking import read_metrics, redact
from distill.train import list_checkpoints, train


def _cfg(tmp_path, teacher_dir, *extra):
    base = [
        "student.layers=[0, 1]",
        "train.max_steps=4",
        "train.save_every=1",
        "train.probe_every=0",
        "tracking.wandb=false",
    ]
    return load_config("recipes/debug.yaml", debug_overrides(tmp_path, teacher_dir, *base, *extra))


@pytest.fixture
def nan_teacher(tmp_path, tokenizer):
    """A teacher whose head turns NaN: every KD target is NaN from the first step."""
    model = make_gpt2(tokenizer, n_layer=2)
    with torch.no_grad():
        model.transformer.ln_f.weight.fill_(float("nan"))
    d = tmp_path / "nan_teacher"
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def test_non_finite_loss_stops_with_the_step_and_a_hint(tmp_path, nan_teacher):
    cfg = _cfg(tmp_path, nan_teacher, "augment.mode=off", "perturb.kind=none")
    with pytest.raises(
        FairDistillError, match=r"non-finite loss at step 1; no checkpoint was written yet\. .*on_nan=skip"
    ):
        train(cfg)


def test_non_finite_loss_can_be_skipped_and_counted(tmp_path, nan_teacher):
    cfg = _cfg(tmp_path, nan_teacher, "augment.mode=off", "perturb.kind=none", "train.on_nan=skip")
    run_dir = train(cfg)
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_3", "step_4"]
    import json

    state = json.loads((run_dir / "checkpoints" / "step_4" / "trainer_state.json").read_text())
    assert state["state"]["skipped_nan"] == 4
    assert read_metrics(run_dir / "metrics.jsonl")


def test_unwritable_output_dir_is_found_before_training(tmp_path, teacher_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = load_config(
        "recipes/debug.yaml", [f"run.output_dir={blocker}", f"teacher.name_or_path={teacher_dir}"]
    )
    with pytest.raises(FairDistillError, match="is not writable"):
        train(cfg)


def test_full_disk_is_found_before_training(tmp_path, teacher_dir, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(FairDistillError, match=r"free under .* a checkpoint needs about"):
        train(_cfg(tmp_path, teacher_dir))


def test_run_name_cannot_escape_the_output_root(tmp_path):
    with pytest.raises(ConfigError, match="may hold only"):
        load_config("recipes/debug.yaml", ["run.name=../../etc"])


def test_resume_never_refuses_an_existing_run(tmp_path, teacher_dir):
    train(_cfg(tmp_path, teacher_dir, "train.max_steps=1"))
    with pytest.raises(ConfigError, match="run.resume is 'never'"):
        train(_cfg(tmp_path, teacher_dir, "train.max_steps=1", "run.resume=never"))


def test_secrets_are_redacted():
    cfg = {
        "tracking": {"api_key": "abc", "wandb_token": "x", "project": "p"},
        "data": {"sample_max_new_tokens": 5},
    }
    out = redact(cfg)
    assert out["tracking"]["api_key"] == "***" and out["tracking"]["wandb_token"] == "***"
    assert out["tracking"]["project"] == "p" and out["data"]["sample_max_new_tokens"] == 5


def test_trust_remote_code_warns(tmp_path, teacher_dir, caplog):
    from distill.models import load_teacher

    cfg = load_config(
        "recipes/debug.yaml", [f"teacher.name_or_path={teacher_dir}", "teacher.trust_remote_code=true"]
    )
    with caplog.at_level("WARNING"):
        load_teacher(cfg)
    assert "trust_remote_code is on" in caplog.text
