"""The trainer's fused loss path (`kd.fused`) gives the same loss and gradients as the loss on full logits."""

from __future__ import annotations

import pytest
import torch
from conftest import debug_overrides

from distill.core.files import read_jsonl
from distill.core.recipe import load_config
from distill.counterfactual.twins import Counterfactuals, make_step_batch
from distill.teacher.targets import Targets, batch_targets
from distill.training.loop import train
from distill.training.step import student_loss_sums


class _Acc:
    """The two things `student_loss_sums` asks of an Accelerator."""

    @staticmethod
    def autocast():
        import contextlib

        return contextlib.nullcontext()


def _item(tokenizer, cf):
    texts = ["The nurse said that she would come back.", "The river froze in the cold winter night there."]
    rows = [(tokenizer.encode(t) + [tokenizer.eos_token_id] * 16)[:16] for t in texts]
    return make_step_batch(torch.tensor(rows), cf)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("method", [False, True])
def test_fused_sums_and_gradients_match_full_logits(tokenizer, tiny_gpt2, tiny_llama, arch, method):
    student = tiny_gpt2 if arch == "gpt2" else tiny_llama
    teacher = tiny_llama if arch == "gpt2" else tiny_gpt2
    cfg = load_config("recipes/debug.yaml", ["augment.mode=append", "perturb.kind=mean"])
    cf = Counterfactuals(cfg, tokenizer) if method else None
    item = _item(tokenizer, cf)
    tin, _ = item.teacher_inputs()
    with torch.no_grad():
        z = teacher(input_ids=tin).logits
    targets = Targets(logq=batch_targets(item, torch.log_softmax(z / cfg.kd.temperature, -1), cf))
    results = []
    for head, tgt in ((None, targets), (student.get_output_embeddings(), targets)) + (
        ((student.get_output_embeddings(), Targets(logits=z)),) if not method else ()
    ):
        student.zero_grad(set_to_none=True)
        sums = student_loss_sums(student, head, item, tgt, cfg, "cpu", _Acc)
        (cfg.kd.alpha * sums.kd + (1 - cfg.kd.alpha) * sums.ce).backward()
        grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
        results.append((float(sums.kd.detach()), float(sums.ce.detach()), grads))
    ref = results[0]
    for kd, ce, grads in results[1:]:
        # the KD sum is a small difference of O(1) terms per token: float32 leaves both paths ~4e-6 from the
        # float64 value (0.1851997 here: full 0.1851957, fused 0.1852036), hence an absolute tolerance
        assert kd == pytest.approx(ref[0], rel=1e-5, abs=5e-5) and ce == pytest.approx(ref[1], rel=1e-5)
        assert grads.keys() == ref[2].keys()
        for n, g in grads.items():
            assert torch.allclose(g, ref[2][n], atol=1e-5, rtol=1e-4), n


def test_a_fused_run_equals_an_unfused_run(tmp_path, teacher_dir, one_thread):
    base = debug_overrides(
        tmp_path,
        teacher_dir,
        "train.max_steps=4",
        "train.log_every=1",
        "tracking.wandb=false",
        "train.eval_every=0",
    )
    runs = {}
    for fused in ("true", "false"):
        for method in (
            ["augment.mode=off", "perturb.kind=none"],
            ["augment.mode=append", "perturb.kind=mean"],
        ):
            name = f"f{fused}-{method[1].split('=')[1]}"
            cfg = load_config("recipes/debug.yaml", base + method + [f"kd.fused={fused}", f"run.name={name}"])
            runs[name] = [
                (r["train/loss_kd"], r["train/loss_ce"])
                for r in read_jsonl(train(cfg) / "metrics.jsonl")
                if "train/loss" in r
            ]
    for kind in ("none", "mean"):
        a, b = runs[f"ftrue-{kind}"], runs[f"ffalse-{kind}"]
        assert len(a) == 4
        for (kd1, ce1), (kd2, ce2) in zip(a, b):
            assert kd1 == pytest.approx(kd2, rel=1e-4, abs=1e-6) and ce1 == pytest.approx(ce2, rel=1e-5)
