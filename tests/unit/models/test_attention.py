"""train.attention: the student's attention kernel while it trains (auto, sdpa or eager): switched, refused,
recorded."""

from __future__ import annotations

import functools
import json
import logging
import sys

import pytest
import torch
from conftest import debug_overrides, make_gpt2, make_llama

from distill.core.errors import ConfigError, ModelError
from distill.core.files import read_jsonl
from distill.core.recipe import load_config
from distill.models.attention import set_attention
from distill.training.loop import train


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return out.logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("make", [make_gpt2, make_llama], ids=["gpt2", "llama"])
def test_eager_attention_gives_the_same_logits_and_gradients_to_rounding(tokenizer, make, monkeypatch):
    model = make(tokenizer, n_layer=2).float()
    assert model.config._attn_implementation == "sdpa"
    module = sys.modules[type(model).__module__]  # where the architecture's eager kernel lives
    calls, eager = [], module.eager_attention_forward
    monkeypatch.setattr(module, "eager_attention_forward", lambda *a, **k: calls.append(1) or eager(*a, **k))
    ids = torch.randint(0, tokenizer.vocab_size, (3, 12), generator=torch.Generator().manual_seed(0))
    ref_logits, ref_grads = _loss_and_grads(model, ids)
    assert not calls
    assert set_attention(model, "eager") == "eager"
    logits, grads = _loss_and_grads(model, ids)
    assert len(calls) == 2  # one per layer
    assert torch.allclose(logits, ref_logits, atol=1e-5, rtol=1e-5)
    assert len(grads) == len(ref_grads)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    set_attention(model, "eager")  # already: a no-op
    set_attention(model, "sdpa")
    assert torch.equal(_loss_and_grads(model, ids)[0], ref_logits)


def test_a_model_that_cannot_switch_is_refused_with_the_fix(tokenizer, monkeypatch):
    model = make_llama(tokenizer, n_layer=1)
    monkeypatch.setattr(type(model), "_can_set_attn_implementation", lambda self: False)
    with pytest.raises(ModelError) as e:
        set_attention(model, "eager")
    msg = str(e.value)
    assert "train.attention='eager'" in msg and "LlamaForCausalLM cannot switch" in msg
    assert "it loaded with 'sdpa'" in msg and "set train.attention=auto" in msg
    assert model.config._attn_implementation == "sdpa"
    assert set_attention(model, "auto") == set_attention(model, "sdpa") == "sdpa"  # nothing to switch


def test_auto_keeps_a_model_without_sdpa_on_eager_and_sdpa_is_refused_for_it(tokenizer, monkeypatch):
    """Architectures transformers has no sdpa for (GPT-Neo, Bloom) load with eager: the default trains them so."""
    model = make_llama(tokenizer, n_layer=1)
    model.set_attn_implementation("eager")
    monkeypatch.setattr(type(model), "_supports_sdpa", False)
    assert set_attention(model, "auto") == "eager"
    with pytest.raises(
        ModelError, match=r"has no sdpa attention in transformers; set train.attention=auto \(keeps 'eager'\)"
    ):
        set_attention(model, "sdpa")


def test_a_switch_transformers_refuses_is_one_error_with_the_fix(tokenizer, monkeypatch):
    model = make_llama(tokenizer, n_layer=1)

    def refuse(self, implementation, **kwargs):
        raise ValueError(f"{implementation} is not available for these weights")

    monkeypatch.setattr(type(model), "set_attn_implementation", refuse)
    with pytest.raises(
        ModelError, match="eager is not available for these weights; set train.attention=auto"
    ):
        set_attention(model, "eager")
    monkeypatch.setattr(type(model), "set_attn_implementation", lambda self, implementation, **kwargs: None)
    with pytest.raises(ModelError, match="LlamaForCausalLM stays 'sdpa'; set train.attention=auto"):
        set_attention(model, "eager")  # a refusal transformers only logs


@pytest.mark.parametrize(
    "student",
    [("student.layers=[0, 3]",), ("student.layers=null", "student.prune.drop=2")],
    ids=["built-student", "pruned-from-the-teacher"],
)
def test_a_run_whose_student_cannot_switch_stops_before_the_teacher_samples(
    tmp_path, teacher_dir, monkeypatch, student
):
    """Checked on the built student, or on the teacher when the student waits for pruning on the transfer set."""
    from transformers import GPT2LMHeadModel

    from distill.training import prepare

    monkeypatch.setattr(GPT2LMHeadModel, "_can_set_attn_implementation", lambda self: False)
    monkeypatch.setattr(prepare, "build_blocks", lambda *a, **k: pytest.fail("the teacher sampled"))
    overrides = debug_overrides(
        tmp_path, teacher_dir, "train.attention=eager", "data.source=teacher_samples", *student
    )
    cfg = load_config("recipes/debug.yaml", overrides)
    with pytest.raises(ModelError, match="GPT2LMHeadModel cannot switch its attention kernel"):
        train(cfg)


def test_an_unknown_kernel_is_refused_by_the_recipe(tmp_path, teacher_dir):
    with pytest.raises(ConfigError, match="train.attention"):
        load_config("recipes/debug.yaml", debug_overrides(tmp_path, teacher_dir, "train.attention=flash"))


def _run(tmp_path, teacher_dir, attention: str, caplog, monkeypatch):
    """4 float32 steps of the debug recipe; returns the run folder, its loss records and how many times transformers'
    eager attention ran."""
    from accelerate.state import AcceleratorState
    from transformers.models.gpt2 import modeling_gpt2

    AcceleratorState._reset_state()
    calls = []
    eager = getattr(
        modeling_gpt2.eager_attention_forward, "__wrapped__", modeling_gpt2.eager_attention_forward
    )

    @functools.wraps(eager)
    def counted(*args, **kwargs):
        calls.append(1)
        return eager(*args, **kwargs)

    monkeypatch.setattr(modeling_gpt2, "eager_attention_forward", counted)
    cfg = load_config(
        "recipes/debug.yaml",
        debug_overrides(
            tmp_path,
            teacher_dir,
            f"run.name=run_{attention}",
            f"train.attention={attention}",
            "data.val_fraction=0.1",
            "train.max_steps=4",
            "train.log_every=1",
            "train.eval_every=0",
            "train.probe_every=0",
            "tracking.wandb=false",
        ),
    )
    with caplog.at_level(logging.INFO, logger="distill"):
        run_dir = train(cfg)
    return run_dir, [r for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r], len(calls)


def test_a_run_trains_with_eager_attention_and_exports_a_student_that_loads_with_the_default(
    tmp_path, teacher_dir, one_thread, caplog, monkeypatch
):
    """The debug recipe, 4 float32 steps with each kernel: eager really runs only when asked for, the losses agree
    to float32 rounding of another kernel, the log and the model card say which one trained, and final/ does not
    carry it. (The tiny GPT-2 trains with attention dropout; torch's sdpa with dropout takes its math path, which
    draws the same dropout mask as eager's F.dropout from the same generator state, so the two runs stay close.)"""
    from transformers import AutoModelForCausalLM

    _, sdpa, n_sdpa = _run(tmp_path, teacher_dir, "auto", caplog, monkeypatch)
    assert "student attention while training: sdpa (train.attention=auto)" in caplog.text
    caplog.clear()
    run_dir, eager, n_eager = _run(tmp_path, teacher_dir, "eager", caplog, monkeypatch)
    assert "student attention while training: eager (train.attention=eager)" in caplog.text
    assert n_sdpa == 0 and n_eager > 0
    assert len(sdpa) == len(eager) == 4
    for a, b in zip(sdpa, eager):
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=1e-4), a["step"]
    card = (run_dir / "final" / "README.md").read_text()
    assert "| attention while training | `eager` (`train.attention`)" in card
    saved = json.loads((run_dir / "final" / "config.json").read_text())
    assert "eager" not in json.dumps(saved) and not any("implementation" in k for k in saved)
    assert AutoModelForCausalLM.from_pretrained(run_dir / "final").config._attn_implementation == "sdpa"
