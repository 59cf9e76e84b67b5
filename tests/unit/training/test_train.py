"""End to end: the debug recipe on a tiny local teacher; the log, the run directory, the final model, a resume."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import debug_overrides, list_checkpoints

from distill.core.errors import ConfigError
from distill.core.files import read_jsonl
from distill.core.recipe import load_config
from distill.training.loop import train


def _cfg(tmp_path, teacher_dir, *extra):
    return load_config(
        "recipes/debug.yaml", debug_overrides(tmp_path, teacher_dir, "data.val_fraction=0.1", *extra)
    )


@pytest.mark.slow
def test_debug_run_end_to_end(tmp_path, teacher_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = _cfg(tmp_path, teacher_dir, "train.max_steps=6", "train.lr=3e-3")
    run_dir = train(cfg)
    assert (run_dir / "config.yaml").is_file()
    recs = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r["step"] for r in recs]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 6
    train_lines = [r for r in recs if "train/loss" in r]
    assert len(train_lines) == 6
    for r in train_lines:
        for k in (
            "train/loss",
            "train/loss_kd",
            "train/loss_ce",
            "train/lr",
            "train/tokens_per_s",
            "train/step_time_s",
            "train/data_wait_frac",
        ):
            assert k in r, k
        assert 0 <= r["train/changed_frac"] <= 1
    assert "probe/pronoun_gap" in recs[0] and "probe/pronoun_gap" in recs[-1]
    val = [r["val/loss"] for r in recs if "val/loss" in r]
    assert val[-1] < val[0], val
    # W&B offline run directory
    assert list((run_dir / "wandb").glob("offline-run-*")), list(run_dir.iterdir())
    # checkpoints: save_every 2, keep_last 2
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_4", "step_6"]
    assert (run_dir / "checkpoints" / "latest").read_text() == "step_6"
    # final model and tokenizer load with the Auto classes
    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    tok = AutoTokenizer.from_pretrained(run_dir / "final")
    assert model.config.num_hidden_layers == 2
    assert tok("The nurse said").input_ids
    card = (run_dir / "final" / "README.md").read_text()
    assert (
        "pipeline_tag: text-generation" in card and str(tmp_path) not in card
    )  # tests/unit/reporting/test_card.py: the rest
    assert "_model_name_or_path" not in (run_dir / "final" / "config.json").read_text()
    assert not list((run_dir / "final").glob("*.bin"))
    probe = json.loads((run_dir / "probe.json").read_text())
    assert {r["profession"] for r in probe["per_profession"]} and probe["teacher"]["pronoun_gap"] >= 0

    # resume: asking for more steps continues from step 6, appending without duplicate steps
    cfg2 = _cfg(tmp_path, teacher_dir, "train.max_steps=8", "train.lr=3e-3")
    train(cfg2)
    steps2 = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert steps2[: len(steps)] == steps
    assert steps2[-1] == 8 and len(set(steps2)) == len(steps2)


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, teacher_dir):
    """A 6-step run stopped after its step-4 checkpoint and resumed equals 6 steps in one go, exactly (CPU)."""
    a = train(_cfg(tmp_path / "a", teacher_dir, "train.max_steps=6", "run.name=a"))
    b = train(_cfg(tmp_path / "b", teacher_dir, "train.max_steps=6", "run.name=b"), stop_after=4)
    assert not (b / "final").exists()
    b = train(_cfg(tmp_path / "b", teacher_dir, "train.max_steps=6", "run.name=b"))
    from safetensors.torch import load_file

    wa = load_file(str(a / "final" / "model.safetensors"))
    wb = load_file(str(b / "final" / "model.safetensors"))
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    la = {r["step"]: r.get("train/loss") for r in read_jsonl(a / "metrics.jsonl")}
    lb = {r["step"]: r.get("train/loss") for r in read_jsonl(b / "metrics.jsonl")}
    assert la == lb


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode, kind",
    [
        ("off", "none"),
        ("off", "mean"),
        ("append", "none"),
        ("replace", "max"),
        ("append", "expmean"),
        ("off", "pair_equalize"),
    ],
)
def test_every_method_combination_runs(tmp_path, teacher_dir, mode, kind):
    cfg = _cfg(
        tmp_path,
        teacher_dir,
        "train.max_steps=2",
        f"augment.mode={mode}",
        f"perturb.kind={kind}",
        "tracking.wandb=false",
    )
    run_dir = train(cfg)
    recs = read_jsonl(run_dir / "metrics.jsonl")
    assert all(json.dumps(r) for r in recs)
    assert any("train/loss" in r for r in recs)


def test_different_recipe_in_existing_run_dir_is_refused(tmp_path, teacher_dir):
    run_dir = train(_cfg(tmp_path, teacher_dir, "train.max_steps=2", "tracking.wandb=false"))
    before = sorted(p.name for p in run_dir.rglob("*"))
    with pytest.raises(ConfigError, match="different recipe") as e:
        train(
            _cfg(
                tmp_path,
                teacher_dir,
                "train.max_steps=2",
                "tracking.wandb=false",
                "kd.alpha=0.9",
                "train.lr=0.002",
            )
        )
    # the message names every field that differs, with both values
    assert "(kd.alpha: 0.5 there, 0.9 now; train.lr: 0.001 there, 0.002 now)" in str(e.value)
    assert (run_dir / "final").is_dir() and sorted(p.name for p in run_dir.rglob("*")) == before


@pytest.mark.parametrize("older", ["identity", "config.yaml"])
def test_a_run_from_before_new_settings_existed_still_resumes(tmp_path, teacher_dir, older):
    """An identity.json recorded before a key existed (here augment.her_decider and probe.winogender), or a
    folder from before identity.json whose config.yaml predates keys (teacher.cache, kd.fused, train.attention)
    or has another loss chunk size, is the same recipe: the run resumes instead of being refused, here with
    another attention kernel."""
    import json

    import yaml

    run_dir = train(_cfg(tmp_path, teacher_dir, "train.max_steps=2", "tracking.wandb=false"))
    if older == "identity":
        ident = json.loads((run_dir / "identity.json").read_text())
        ident["recipe"]["augment"].pop("her_decider")
        ident["recipe"]["probe"].pop("winogender")
        (run_dir / "identity.json").write_text(json.dumps(ident))
    else:
        (run_dir / "identity.json").unlink()
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        for k in ("cache", "cache_top_k"):
            saved["teacher"].pop(k)
        saved["kd"].pop("fused")
        saved["kd"]["chunk_size"] = 1024
        saved["train"].pop("attention")
        (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    again = train(
        _cfg(
            tmp_path,
            teacher_dir,
            "train.max_steps=3",
            "tracking.wandb=false",
            "kd.fused=false",
            "train.attention=eager",
        )
    )
    steps = [r["step"] for r in read_jsonl(again / "metrics.jsonl") if "train/loss" in r]
    assert steps[-1] == 3


def _tree_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_the_debug_recipe_as_shipped_is_tiny(tmp_path, monkeypatch, one_thread):
    """recipes/debug.yaml itself (its own tiny random teacher, data and word lists), run from another folder: a
    small model, a few MB written, and a resume of the finished run that changes nothing."""
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parents[3]
    cfg = load_config(root / "recipes/debug.yaml", ["tracking.wandb=false"])
    run_dir = train(cfg)
    assert run_dir == tmp_path / "runs" / "debug"
    written = _tree_bytes(run_dir) + _tree_bytes(tmp_path / ".cache")
    assert written < 10 * 2**20, written  # the SmolLM2 version (recipes/smoke.yaml) writes ~1 GB
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_2", "step_4"]
    assert (run_dir / "final" / "model.safetensors").stat().st_size < 2**20
    recs = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in recs if "train/loss" in r] == [1, 2, 3, 4]
    final = (run_dir / "final" / "model.safetensors").read_bytes()
    train(load_config(root / "recipes/debug.yaml", ["tracking.wandb=false"]))  # already finished: a no-op
    assert (run_dir / "final" / "model.safetensors").read_bytes() == final


def test_each_probe_runs_once(tmp_path, teacher_dir, monkeypatch):
    """Student probes at steps 0, 2 and 4 and the teacher's at step 0: the final table (probe.json) reuses the
    last evaluation's and step 0's instead of probing both models again."""
    import distill.training.monitor as M

    calls = []
    real = M.run_probe
    monkeypatch.setattr(M, "run_probe", lambda *a, **k: calls.append(1) or real(*a, **k))
    run_dir = train(
        _cfg(tmp_path, teacher_dir, "train.max_steps=4", "train.probe_every=2", "tracking.wandb=false")
    )
    assert len(calls) == 4
    table = json.loads((run_dir / "probe.json").read_text())
    last = read_jsonl(run_dir / "metrics.jsonl")[-1]
    assert table["student"]["pronoun_gap"] == last["probe/pronoun_gap"]
    assert (
        table["teacher"]["pronoun_gap"]
        == read_jsonl(run_dir / "metrics.jsonl")[0]["probe/teacher_pronoun_gap"]
    )


def test_an_error_in_the_loop_restores_the_signal_handlers_and_closes_the_run(
    tmp_path, teacher_dir, monkeypatch
):
    """Whatever ends the loop, the run's stack unwinds: SIGTERM/SIGINT handlers are the caller's again and the
    trackers are finished (one exit path)."""
    import signal

    import distill.training.lifecycle as L
    import distill.training.loop as T

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    closed = []
    real_close = L.Tracking.close
    monkeypatch.setattr(L.Tracking, "close", lambda self: closed.append(1) or real_close(self))

    def boom(*a, **k):
        raise RuntimeError("a bug in the step")

    monkeypatch.setattr(T, "student_loss_sums", boom)
    with pytest.raises(RuntimeError, match="a bug in the step"):
        train(_cfg(tmp_path, teacher_dir, "tracking.wandb=false"))
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert closed == [1]
