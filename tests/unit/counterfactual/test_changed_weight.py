"""`kd.changed_weight`: the KD term counts w times at the positions whose target the teacher-probability
modification changed (total variation >= `kd.changed_tv` from the teacher's own distribution for that row)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import debug_overrides

from distill.core.errors import ConfigError
from distill.core.files import read_jsonl
from distill.core.recipe import load_config
from distill.counterfactual.perturb import changed_positions, own_rows
from distill.counterfactual.twins import Counterfactuals, make_step_batch
from distill.teacher.targets import modified_targets
from distill.training.loop import train
from distill.training.losses import kd_ce_sums
from distill.training.step import student_loss_sums


class _Acc:
    @staticmethod
    def autocast():
        return contextlib.nullcontext()


def test_a_weight_without_a_modification_is_refused_naming_the_value():
    with pytest.raises(ConfigError, match=r"kd.changed_weight 4 .*perturb.kind is none"):
        load_config("recipes/debug.yaml", ["perturb.kind=none", "kd.changed_weight=4"])
    with pytest.raises(ConfigError, match=r"kd.changed_weight 2 weighs the KD term, but kd.alpha is 0"):
        load_config("recipes/debug.yaml", ["perturb.kind=mean", "kd.alpha=0", "kd.changed_weight=2"])
    with pytest.raises(ConfigError, match=r"kd.changed_tv must be in \(0, 1\]"):
        load_config("recipes/debug.yaml", ["perturb.kind=mean", "kd.changed_tv=0"])


def test_own_rows_point_each_student_row_at_the_teacher_pass_of_its_own_text():
    twin_rows = torch.tensor(
        [True, False, True, True]
    )  # the teacher ran x (4 rows), then twins of rows 0, 2, 3
    selected = torch.tensor([True, False, False, True])
    assert own_rows(selected, twin_rows, "append").tolist() == [0, 1, 2, 3, 4, 6]
    assert own_rows(selected, twin_rows, "replace").tolist() == [4, 1, 2, 6]
    assert own_rows(selected, twin_rows, "off").tolist() == [0, 1, 2, 3]


def test_changed_positions_use_the_total_variation_threshold():
    p = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]]))
    q = torch.log(torch.tensor([[[0.5, 0.5], [0.8, 0.2], [0.2, 0.8]], [[0.4, 0.6], [0.9, 0.1], [0.2, 0.8]]]))
    got = changed_positions(q, p, torch.tensor([0, 0]), tv=0.099)  # TV 0.1 at both
    assert got.tolist() == [[False, True, False], [True, False, False]]
    assert not changed_positions(q, p, torch.tensor([0, 0]), tv=0.101).any()


@pytest.mark.parametrize("mode", ["append", "off"])
def test_weighted_sums_and_gradients_equal_the_reference_on_full_logits(
    tokenizer, tiny_gpt2, tiny_llama, mode
):
    """KD + (w - 1) * KD(changed) from the fused path equals the per-position weighted KL summed on full logits,
    and the gradients agree; the CE sum is untouched."""
    w = 4.0
    cfg = load_config(
        "recipes/debug.yaml",
        [f"augment.mode={mode}", "perturb.kind=mean", f"kd.changed_weight={w}", "kd.changed_tv=0.01"],
    )
    cf = Counterfactuals(cfg, tokenizer)
    texts = ["The nurse said that she would come back.", "The river froze in the cold winter night there."]
    rows = [(tokenizer.encode(t) + [tokenizer.eos_token_id] * 16)[:16] for t in texts]
    batch = make_step_batch(torch.tensor(rows), cf)
    tin, _ = batch.teacher_inputs()
    with torch.no_grad():
        logp = torch.log_softmax(tiny_llama(input_ids=tin).logits / cfg.kd.temperature, -1)
    targets = modified_targets(batch, logp, cf, cfg.kd.changed_tv)
    valid = batch.labels != -100
    n_changed = int((targets.changed & valid).sum())
    assert 0 < n_changed < int(valid.sum())  # the nurse's pronoun context moved, the river's did not

    student, head = tiny_gpt2, tiny_gpt2.get_output_embeddings()
    student.zero_grad(set_to_none=True)
    sums = student_loss_sums(student, head, batch, targets, cfg, "cpu", _Acc)
    (cfg.kd.alpha * sums.kd + (1 - cfg.kd.alpha) * sums.ce).backward()
    fused = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}

    student.zero_grad(set_to_none=True)
    logits = student(input_ids=batch.student_ids, attention_mask=batch.student_mask).logits
    T = cfg.kd.temperature
    kl = (targets.logq.exp() * (targets.logq - torch.log_softmax(logits / T, -1))).sum(-1) * T**2
    weights = torch.where(targets.changed, w, 1.0) * valid
    ref_kd = (kl * weights).sum()
    ref_ce = kd_ce_sums(logits, None, batch.labels, T).ce
    (cfg.kd.alpha * ref_kd + (1 - cfg.kd.alpha) * ref_ce).backward()
    assert float(sums.kd.detach()) == pytest.approx(float(ref_kd.detach()), rel=1e-4, abs=1e-4)
    assert float(sums.ce.detach()) == pytest.approx(float(ref_ce.detach()), rel=1e-5)
    for n, g in fused.items():
        assert torch.allclose(g, student.get_parameter(n).grad, atol=1e-5, rtol=1e-4), n

    # the unfused path gives the same numbers
    student.zero_grad(set_to_none=True)
    plain = student_loss_sums(student, None, batch, targets, cfg, "cpu", _Acc)
    assert float(plain.kd.detach()) == pytest.approx(float(ref_kd.detach()), rel=1e-4, abs=1e-4)


def test_a_weighted_run_logs_the_share_it_weighs(tmp_path, teacher_dir, one_thread):
    base = debug_overrides(
        tmp_path, teacher_dir, "train.max_steps=2", "train.log_every=1", "tracking.wandb=false"
    )
    extra = ["augment.mode=append", "perturb.kind=mean", "kd.changed_weight=5", "train.eval_every=0"]
    extra.append("kd.changed_tv=1e-4")  # the tiny random teacher moves little: a low threshold
    run = train(load_config("recipes/debug.yaml", base + extra))
    lines = [m for m in read_jsonl(run / "metrics.jsonl") if "train/weighted_frac" in m]
    assert lines and all(0.0 < m["train/weighted_frac"] < 1.0 for m in lines)
