"""Fault guards: non-finite loss, unwritable or full output directory, secrets kept out of configs and logs."""

from __future__ import annotations

import pytest
import torch
from conftest import debug_overrides, list_checkpoints, make_gpt2

from distill.core.errors import ConfigError, FairDistillError
from distill.core.files import read_jsonl
from distill.core.recipe import load_config
from distill.core.tracking import redact
from distill.training.loop import train


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
        FairDistillError, match=r"non-finite loss at step 1; no checkpoint was written yet\."
    ) as e:
        train(cfg)
    # before any update the learning rate cannot be the cause: the hint says what can
    assert "not finite before any update" in str(e.value) and "Lower train.lr" not in str(e.value)


def test_non_finite_loss_can_be_skipped_and_counted(tmp_path, nan_teacher):
    cfg = _cfg(tmp_path, nan_teacher, "augment.mode=off", "perturb.kind=none", "train.on_nan=skip")
    with pytest.raises(
        FairDistillError, match=r"every one of the 4 steps had a non-finite loss and was skipped"
    ):
        train(cfg)  # an untrained student is not exported as if it were one
    run_dir = tmp_path / "runs" / "debug"
    assert not (run_dir / "final").exists()
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_3", "step_4"]
    import json

    state = json.loads((run_dir / "checkpoints" / "step_4" / "trainer_state.json").read_text())
    assert state["state"]["skipped_nan"] == 4
    assert read_jsonl(run_dir / "metrics.jsonl")


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
    with pytest.raises(FairDistillError, match=r"free under .*; this run needs about .* at its peak"):
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


def test_trust_remote_code_is_confirmed_and_warned(tmp_path, teacher_dir, caplog, monkeypatch):
    """From a recipe file only (tests/unit/core/test_config.py), confirmed by --trust-remote-code (here its
    environment variable), warned; tests/system/test_remote_code.py runs a teacher that ships code."""
    from distill.models import remote_code
    from distill.models.loading import load_teacher

    recipe = tmp_path / "remote.yaml"
    recipe.write_text(f"teacher: {{name_or_path: {teacher_dir}, trust_remote_code: true}}\n")
    cfg = load_config(recipe, ["student.layers=[0, 1]"])
    monkeypatch.delenv(remote_code.CONFIRM_ENV, raising=False)
    with pytest.raises(ConfigError, match="confirm with --trust-remote-code"):
        load_teacher(cfg)
    monkeypatch.setenv(remote_code.CONFIRM_ENV, "1")
    monkeypatch.setattr(remote_code, "_WARNED", set())
    with caplog.at_level("WARNING"):
        load_teacher(cfg)
    assert "trust_remote_code is on, confirmed" in caplog.text


# ---- checkpoints: damaged files, the disk's peak, a disk that fills up --------------------------------------


def _digest_tree(folder):
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _final_weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final" / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage",
    [
        ("model.safetensors", "half"),
        ("model.safetensors", 0),
        ("optimizer.bin", 0),
        ("trainer_state.json", "missing"),
    ],
)
def test_a_damaged_newest_checkpoint_is_skipped_for_the_newest_whole_one(
    tmp_path, teacher_dir, caplog, damage
):
    import os

    name, how = damage
    ref = train(_cfg(tmp_path / "ref", teacher_dir, "augment.mode=off", "perturb.kind=none"))
    cfg = _cfg(tmp_path, teacher_dir, "augment.mode=off", "perturb.kind=none", "train.keep_last=3")
    run_dir = train(cfg, stop_after=3)  # left after step 3's checkpoint, as a killed job would be
    target = run_dir / "checkpoints" / "step_3" / name
    if how == "missing":
        target.unlink()
    else:
        os.truncate(target, target.stat().st_size // 2 if how == "half" else 0)
    damaged = _digest_tree(run_dir / "checkpoints" / "step_3")
    with caplog.at_level("WARNING"):
        train(_cfg(tmp_path, teacher_dir, "augment.mode=off", "perturb.kind=none", "train.keep_last=3"))
    assert "checkpoint" in caplog.text and "step_3 is damaged" in caplog.text and name in caplog.text
    # the damaged checkpoint is kept aside, byte for byte, and out of rotation
    assert _digest_tree(run_dir / "checkpoints" / "damaged_step_3") == damaged
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_2", "step_3", "step_4"]
    # resumed from step 2: the same weights and losses as an uninterrupted run, every step logged once
    a, b = _final_weights(ref), _final_weights(run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r]
    assert steps == [1, 2, 3, 4]


def test_every_checkpoint_damaged_refuses_and_keeps_the_log(tmp_path, teacher_dir):
    import os

    run_dir = train(_cfg(tmp_path, teacher_dir, "augment.mode=off", "perturb.kind=none"), stop_after=2)
    for ckpt in list_checkpoints(run_dir):
        os.truncate(ckpt / "model.safetensors", 0)
    log_before = (run_dir / "metrics.jsonl").read_bytes()
    with pytest.raises(
        FairDistillError, match=r"every checkpoint in .* is damaged \(kept as damaged_step_N\)"
    ):
        train(_cfg(tmp_path, teacher_dir, "augment.mode=off", "perturb.kind=none"))
    assert (run_dir / "metrics.jsonl").read_bytes() == log_before
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("damaged_step_*")) == [
        "damaged_step_1",
        "damaged_step_2",
    ]


@pytest.mark.slow
def test_the_disk_estimate_covers_the_real_peak(tmp_path, teacher_dir, monkeypatch):
    """The most bytes the run directory ever holds (measured each time a finished folder is renamed into place,
    when the new copy and the kept ones all exist) is within the estimate, and the estimate is not loose."""
    import os

    import distill.core.rundir as R

    seen: dict = {}
    real_replace = os.replace

    def measuring_replace(src, dst):
        real_replace(src, dst)
        run_dir = tmp_path / "runs" / "debug"
        seen["peak"] = max(seen.get("peak", 0), R._bytes_under(run_dir))

    monkeypatch.setattr(R.os, "replace", measuring_replace)
    estimates = []
    real_check = R.RunDir.check_writable
    monkeypatch.setattr(
        R.RunDir, "check_writable", lambda d, need=None: (estimates.append(need), real_check(d, need))
    )
    train(_cfg(tmp_path, teacher_dir, "train.keep_last=2"))
    need = [e for e in estimates if e][0]
    assert need["keep"] == 2
    assert seen["peak"] <= need["peak"] <= seen["peak"] + 32 * 2**20, (seen, need)
    # three checkpoints at once (two kept, one being written): what a one-checkpoint estimate missed
    assert seen["peak"] > 2 * need["checkpoint"] - 2 * 2**20


def test_too_little_disk_for_the_peak_is_refused_before_training(tmp_path, teacher_dir, monkeypatch):
    import shutil
    from collections import namedtuple

    from distill.core.rundir import peak_disk_bytes

    cfg = _cfg(tmp_path, teacher_dir)
    n_params = sum(p.numel() for p in make_gpt2_student_params(teacher_dir))
    need = peak_disk_bytes(n_params, cfg.train.keep_last, cfg.train.max_steps, cfg.train.save_every)
    usage = namedtuple("usage", "total used free")
    # room for one checkpoint and final/ (what the old estimate asked for), not for the peak
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 0, need["peak"] - 2**20))
    with pytest.raises(FairDistillError, match=r"needs about \d+ MiB more at its peak \(2 kept checkpoint"):
        train(cfg)
    run_dir = tmp_path / "runs" / "debug"
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.jsonl").exists()


def make_gpt2_student_params(teacher_dir):
    from transformers import AutoModelForCausalLM

    from distill.core.config import StudentConfig
    from distill.models.loading import build_student

    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    return list(build_student(StudentConfig(layers=[0, 1]), teacher).parameters())


@pytest.mark.slow
def test_a_disk_that_fills_up_during_a_save_keeps_the_last_good_checkpoint(
    tmp_path, teacher_dir, monkeypatch, capsys
):
    import errno

    from accelerate import Accelerator

    from distill.cli import EXIT_USER_ERROR, main
    from distill.core.rundir import checkpoint_problem

    real_save = Accelerator.save_state

    def filling_save(self, output_dir=None, **kw):
        if output_dir.endswith("step_3"):
            from pathlib import Path

            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"\0" * 1000)  # half written
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", filling_save)
    args = [
        "train",
        "recipes/debug.yaml",
        *debug_overrides(
            tmp_path, teacher_dir, "student.layers=[0, 1]", "train.max_steps=4", "train.save_every=1"
        ),
        "train.probe_every=0",
        "tracking.wandb=false",
    ]
    assert main(args) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no space left under ") and "while writing checkpoint step_3" in err[-1]
    assert "the last good checkpoint step_2 is intact" in err[-1] and "Traceback" not in "\n".join(err)
    run_dir = tmp_path / "runs" / "debug"
    ckpts = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir() if p.is_dir()) == ["step_1", "step_2"]
    assert all(checkpoint_problem(p) is None for p in list_checkpoints(run_dir))
    logged = read_jsonl(run_dir / "metrics.jsonl")
    assert max(r["step"] for r in logged) == 3  # the step's log line was written before the save

    monkeypatch.setattr(Accelerator, "save_state", real_save)  # space freed: the same command resumes
    assert main(args) == 0
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r] == [1, 2, 3, 4]
