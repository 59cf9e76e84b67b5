"""Cached teacher targets: exact where kept, a distribution everywhere, and training on them equals a live teacher."""

from __future__ import annotations

import pytest
import torch
from conftest import debug_overrides

from distill.core.errors import ConfigError, FairDistillError
from distill.core.files import read_jsonl
from distill.core.recipe import load_config
from distill.teacher.cache import TeacherCache, compress, expand
from distill.training.loop import train


def _logp(seed=0, shape=(2, 5, 40)):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(3 * torch.randn(*shape, generator=g), -1)


def test_full_top_k_round_trips_exactly():
    logp = _logp()
    g_idx = torch.tensor([3, 7, 11])
    back = expand(compress(logp, 40, g_idx), g_idx, 40)
    assert torch.allclose(back, logp, atol=1e-6)


def test_small_top_k_keeps_top_and_g_exact_and_sums_to_one():
    logp = _logp(1)
    g_idx = torch.tensor([0, 5, 9, 30])
    fields = compress(logp, 4, g_idx)
    back = expand(fields, g_idx, 40)
    assert torch.allclose(back.exp().sum(-1), torch.ones(2, 5), atol=1e-5)
    assert torch.equal(back[..., g_idx], logp[..., g_idx])
    top = logp.topk(4, -1).indices
    assert torch.equal(back.gather(-1, top), logp.gather(-1, top))
    # the rest is spread evenly: KL(full || cached) is small and never negative
    kl = (logp.exp() * (logp - back)).sum(-1)
    assert (kl >= -1e-6).all() and kl.max() < 0.5


def test_top_k_overlapping_g_counts_no_token_twice():
    logp = _logp(2)
    top = logp.topk(3, -1).indices[0, 0]
    g_idx = top[:2].clone()  # G tokens that are also among the top-k
    fields = compress(logp, 3, g_idx)
    assert int(fields["n_rest"][0, 0]) == 40 - 3
    assert torch.allclose(expand(fields, g_idx, 40).exp().sum(-1), torch.ones(2, 5), atol=1e-5)


def _cfg(tmp_path, teacher_dir, *extra):
    return load_config(
        "recipes/debug.yaml",
        debug_overrides(
            tmp_path,
            teacher_dir,
            "data.val_fraction=0.1",
            "train.max_steps=4",
            "train.log_every=1",
            "train.eval_every=0",
            "train.probe_every=0",
            "tracking.wandb=false",
            "data.seed=0",
            *extra,
        ),
    )


def _losses(run_dir):
    return [
        (r["train/loss_kd"], r["train/loss_ce"])
        for r in read_jsonl(run_dir / "metrics.jsonl")
        if "train/loss" in r
    ]


@pytest.mark.parametrize("fmt", ["hidden", "topk"])
@pytest.mark.parametrize(
    "mode,kind", [("off", "none"), ("append", "mean"), ("off", "max"), ("replace", "pair_equalize")]
)
def test_training_on_a_full_cache_equals_the_live_teacher(tmp_path, teacher_dir, one_thread, mode, kind, fmt):
    """The hidden-state cache, and a top-k cache with k = V (every token kept), give the same losses and the same
    final weights as running the teacher every step."""
    method = [f"augment.mode={mode}", f"perturb.kind={kind}"]
    live = train(_cfg(tmp_path, teacher_dir, *method, "run.name=live"))
    cache = tmp_path / "tcache"
    cached = train(
        _cfg(
            tmp_path,
            teacher_dir,
            *method,
            "run.name=cached",
            f"teacher.cache={cache}",
            "teacher.cache_top_k=100000",
        )
    )
    assert len(list(cache.glob("*.safetensors"))) == 1
    a, b = _losses(live), _losses(cached)
    assert len(a) == 4
    for (kd1, ce1), (kd2, ce2) in zip(a, b):
        assert kd1 == pytest.approx(kd2, rel=1e-5, abs=1e-6) and ce1 == pytest.approx(ce2, rel=1e-5)
    from safetensors.torch import load_file

    wa = load_file(str(live / "final" / "model.safetensors"))
    wb = load_file(str(cached / "final" / "model.safetensors"))
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k


def test_the_cache_is_shared_across_methods_and_students_and_rebuilt_for_other_blocks(
    tmp_path, teacher_dir, one_thread, monkeypatch
):
    import distill.teacher.cache as tc

    calls = []
    real = tc.build_cache
    monkeypatch.setattr(tc, "build_cache", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = f"teacher.cache={tmp_path / 'tcache'}"
    train(_cfg(tmp_path, teacher_dir, cache, "run.name=a", "augment.mode=off", "perturb.kind=none"))
    train(_cfg(tmp_path, teacher_dir, cache, "run.name=b", "augment.mode=append", "perturb.kind=mean"))
    train(
        _cfg(
            tmp_path,
            teacher_dir,
            cache,
            "run.name=c",
            "student.layers=[1, 2, 3]",
            "run.seed=3",
            "data.seed=0",
        )
    )
    assert len(calls) == 1
    train(
        _cfg(tmp_path, teacher_dir, cache, "run.name=d", "data.block_size=12")
    )  # other blocks: another file
    assert len(calls) == 2 and len(list((tmp_path / "tcache").glob("*.safetensors"))) == 2


def test_a_damaged_cache_file_fails_with_the_fix(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(FairDistillError, match="delete it"):
        TeacherCache(bad)


def test_cache_top_k_is_checked(tmp_path, teacher_dir):
    with pytest.raises(ConfigError, match="teacher.cache_top_k"):
        _cfg(tmp_path, teacher_dir, "teacher.cache_top_k=0")


def test_a_teacher_whose_logits_are_not_its_head_is_refused_for_the_hidden_format(
    tmp_path, teacher_dir, monkeypatch
):
    """A model that scales or soft-caps its logits cannot be cached as hidden states; the error names the fix."""
    from transformers import GPT2LMHeadModel

    real = GPT2LMHeadModel.forward

    def capped(self, *a, **k):
        out = real(self, *a, **k)
        out.logits = 30 * torch.tanh(out.logits / 30) + 1.0
        return out

    monkeypatch.setattr(GPT2LMHeadModel, "forward", capped)
    with pytest.raises(FairDistillError, match="cache_format=topk"):
        train(_cfg(tmp_path, teacher_dir, f"teacher.cache={tmp_path / 'tc'}"))
    assert not list((tmp_path / "tc").glob("*.safetensors"))


@pytest.mark.parametrize("mode,kind", [("off", "none"), ("append", "mean")])
def test_a_bf16_run_caches_bf16_hidden_states_that_equal_the_live_bf16_teacher(
    tmp_path, teacher_dir, one_thread, mode, kind
):
    """Under bf16 autocast the cache holds what the teacher's lm_head multiplied (bf16: half the bytes), and
    training on it gives the live bf16 teacher's losses; a float32 run does not read the bf16 file."""
    import json

    from safetensors import safe_open

    method = [f"augment.mode={mode}", f"perturb.kind={kind}", "train.mixed_precision=bf16"]
    live = train(_cfg(tmp_path, teacher_dir, *method, "run.name=live"))
    cache = tmp_path / "tcache"
    cached = train(_cfg(tmp_path, teacher_dir, *method, "run.name=cached", f"teacher.cache={cache}"))
    (path,) = cache.glob("*.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["fairdistill"])
        hidden = f.get_tensor("x_hidden")
    assert hidden.dtype == torch.bfloat16 and meta["dtype"] == "bfloat16"
    assert meta["bytes_per_token"] == 2 * hidden.shape[-1]
    a, b = _losses(live), _losses(cached)
    assert len(a) == 4
    for (kd1, ce1), (kd2, ce2) in zip(a, b):
        # the same bf16 matmuls, up to the rounding of one product per logit
        assert kd1 == pytest.approx(kd2, rel=2e-3, abs=1e-4) and ce1 == pytest.approx(ce2, rel=2e-3)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # one process, a second precision: Accelerate's state is process-wide
    train(
        _cfg(tmp_path, teacher_dir, "run.name=fp32", f"teacher.cache={cache}", 'train.mixed_precision="no"')
    )
    assert len(list(cache.glob("*.safetensors"))) == 2


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_the_head_check_is_precision_aware_and_still_refuses_soft_capping(
    tmp_path, teacher_dir, monkeypatch, precision
):
    """A plain teacher passes the build-time check in either precision (bf16 logits are compared with a bf16
    head at bf16 tolerance); a soft-capping one is refused in either, with the fix."""
    from transformers import GPT2LMHeadModel

    ok = train(
        _cfg(
            tmp_path,
            teacher_dir,
            "run.name=plain",
            f"teacher.cache={tmp_path / 'tc'}",
            f"train.mixed_precision={precision!r}",
            "train.max_steps=1",
        )
    )
    assert (ok / "final").is_dir()
    real = GPT2LMHeadModel.forward

    def capped(self, *a, **k):
        out = real(self, *a, **k)
        out.logits = 30 * torch.tanh(out.logits / 30) + 1.0
        return out

    monkeypatch.setattr(GPT2LMHeadModel, "forward", capped)
    with pytest.raises(FairDistillError, match="soft-capping or scaling.*cache_format=topk"):
        train(
            _cfg(
                tmp_path,
                teacher_dir,
                "run.name=capped",
                f"teacher.cache={tmp_path / 'tc2'}",
                f"train.mixed_precision={precision!r}",
            )
        )
    assert not list((tmp_path / "tc2").glob("*.safetensors"))


def test_head_tolerance_is_that_of_the_dtype():
    from distill.teacher.cache import head_tolerance

    assert head_tolerance(torch.float32, 0.5) == pytest.approx(1e-3)
    assert head_tolerance(torch.bfloat16, 10.0) == pytest.approx(2 * 2**-7 * 10)
    # a soft-cap of 30 moves a logit of 10 by 0.35, far beyond bf16's 0.16 there
    assert abs(30 * torch.tanh(torch.tensor(10 / 30)) - 10) > head_tolerance(torch.bfloat16, 10.0)
