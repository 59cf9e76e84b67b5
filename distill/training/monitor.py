"""What training measures as it goes: validation loss and perplexity, the pronoun probe, the Winogender
stereotype probe (`probe.winogender`), the pronoun-agreement guard (`probe.agreement`), and at the end the
per-profession probe table (`probe.json`, W&B).

Every measurement runs on every process: under FSDP or ZeRO-3 a forward gathers the weights from all of them.
"""

from __future__ import annotations

import json
import math
import time

import torch

from distill.core.config import Config
from distill.core.files import atomic_write
from distill.core.rundir import RunDir
from distill.data.transfer import next_token_labels
from distill.training.losses import kd_ce_sums

VAL_CHUNK_SIZE = 1024
"""Positions per chunk of the validation loss (no gradients, so larger chunks than training's `kd.chunk_size`)."""


@torch.no_grad()
def validation_loss(model, blocks: torch.Tensor, batch_size: int, device, accelerator) -> float:
    """Token-weighted mean next-token CE of `model` on `blocks` [N, T] (split across processes, then reduced)."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, device=device, dtype=torch.float64)
    shard = blocks[accelerator.process_index :: accelerator.num_processes]
    # Every process runs the same number of forwards: under FSDP or ZeRO-3 each forward gathers weights from all
    # of them. A process whose shard ran out repeats one block and counts it with weight 0.
    n_batches = math.ceil(math.ceil(blocks.shape[0] / accelerator.num_processes) / batch_size)
    for i in range(0, n_batches * batch_size, batch_size):
        x, weight = shard[i : i + batch_size], 1.0
        if x.shape[0] == 0:
            x, weight = blocks[:1], 0.0
        x = x.to(device)
        labels = next_token_labels(x)
        with accelerator.autocast():
            logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits  # blocks are never padded
        s = kd_ce_sums(logits, None, labels, 1.0, VAL_CHUNK_SIZE)
        total += weight * torch.tensor([s.ce.item(), s.tokens], device=device, dtype=torch.float64)
    total = accelerator.reduce(total, reduction="sum")
    if was_training:
        model.train()
    return float(total[0] / total[1].clamp(min=1))


def run_probe(model, tokenizer, cfg: Config, device) -> dict:
    """The pronoun probe (`distill.evaluation.metrics.pronoun_probe`) on the recipe's professions and templates, in eval mode."""
    from distill.evaluation.metrics.pronoun_probe import probe_prompts, pronoun_probe

    professions, templates = probe_prompts(
        cfg.probe.professions, cfg.probe.max_professions, cfg.probe.templates
    )
    was_training = model.training
    model.eval()
    out = pronoun_probe(model, tokenizer, professions, templates, device=device)
    if was_training:
        model.train()
    return out


def run_agreement_probe(model, tokenizer, cfg: Config, device) -> dict:
    """Pronoun agreement where the context decides the gender (`probe/agreement*`); {} when `probe.agreement` is
    null."""
    if not cfg.probe.agreement:
        return {}
    from distill.evaluation.metrics.pronoun_agreement import live_probe, load_prompts

    return live_probe(model, tokenizer, load_prompts(cfg.probe.agreement), device)


def run_stereo_probe(model, tokenizer, cfg: Config, device, teacher_scores=None) -> tuple[dict, dict]:
    """Occupational-stereotype probe on Winogender (`probe/stereo_*`); ({}, {}) when `probe.winogender` is null."""
    if not cfg.probe.winogender:
        return {}, {}
    from distill.evaluation.metrics.winogender import live_probe, load_templates
    from distill.evaluation.stereotype import load_occupation_stats

    folder = cfg.probe.winogender
    return live_probe(
        model, tokenizer, load_templates(folder), load_occupation_stats(folder), teacher_scores, device
    )


class Monitor:
    """Measures student (and, at step 0, teacher) during training; keeps the latest probes for the final table."""

    def __init__(self, cfg: Config, accelerator, student, teacher, tokenizer, val_blocks: torch.Tensor):
        from accelerate.utils import DistributedType

        self.cfg, self.accelerator, self.tokenizer, self.val_blocks = cfg, accelerator, tokenizer, val_blocks
        self.student, self.teacher, self.device = student, teacher, accelerator.device
        self.fsdp = accelerator.distributed_type == DistributedType.FSDP
        self.student_probe: tuple[int, dict] | None = None
        self.teacher_probe: dict | None = None
        # the teacher's per-occupation scores, so the student's probe can say how much of its stereotype is kept
        self.stereo_teacher, scores = run_stereo_probe(teacher, tokenizer, cfg, self.device)
        self.teacher_stereo = scores or None

    def _probed(self):
        """The student as a probe runs it: sharded under FSDP (its forward gathers), else unwrapped."""
        return self.student if self.fsdp else self.accelerator.unwrap_model(self.student)

    def evaluate(self, step: int, probe: bool) -> dict:
        """`val/loss`, `val/ppl` and, with `probe`, `probe/pronoun_gap`, `probe/he_minus_she`, `probe/stereo_*`,
        `probe/agreement*`."""
        cfg = self.cfg
        out = {
            "val/loss": validation_loss(
                self.student, self.val_blocks, cfg.train.micro_batch_size, self.device, self.accelerator
            )
        }
        out["val/ppl"] = math.exp(min(out["val/loss"], 50))
        if probe:
            pr = run_probe(self._probed(), self.tokenizer, cfg, self.device)
            self.student_probe = (step, pr)
            out["probe/pronoun_gap"], out["probe/he_minus_she"] = pr["pronoun_gap"], pr["he_minus_she"]
            out.update(
                run_stereo_probe(self._probed(), self.tokenizer, cfg, self.device, self.teacher_stereo)[0]
            )
            out.update(run_agreement_probe(self._probed(), self.tokenizer, cfg, self.device))
        return out

    def first(self, timings: dict) -> dict:
        """Step 0: the untrained student, the teacher's validation loss and probes, and the setup's timings."""
        t0 = time.perf_counter()
        out = self.evaluate(0, probe=True)
        mbs = self.cfg.train.micro_batch_size
        out["val/teacher_loss"] = validation_loss(
            self.teacher, self.val_blocks, mbs, self.device, self.accelerator
        )
        pr = self.teacher_probe = run_probe(self.teacher, self.tokenizer, self.cfg, self.device)
        out["probe/teacher_pronoun_gap"], out["probe/teacher_he_minus_she"] = (
            pr["pronoun_gap"],
            pr["he_minus_she"],
        )
        teacher_probes = self.stereo_teacher | run_agreement_probe(
            self.teacher, self.tokenizer, self.cfg, self.device
        )
        out.update({k.replace("probe/", "probe/teacher_"): v for k, v in teacher_probes.items()})
        return out | timings | {"time/eval_s": time.perf_counter() - t0}

    def write_probe_table(self, run: RunDir, step: int) -> None:
        """Per-profession pronoun probe (he minus she, nats) of teacher and final student: `probe.json` and a W&B
        table. Probes already run at this step (the last evaluation, step 0's teacher) are not run again."""
        t = self.teacher_probe or run_probe(self.teacher, self.tokenizer, self.cfg, self.device)
        s = self.student_probe[1] if self.student_probe and self.student_probe[0] == step else None
        s = s or run_probe(self._probed(), self.tokenizer, self.cfg, self.device)
        if not self.accelerator.is_main_process:
            return
        rows = [
            {"profession": p, "teacher": t["per_profession"].get(p), "student": s["per_profession"][p]}
            for p in s["per_profession"]
        ]
        summary = {
            "teacher": {"pronoun_gap": t["pronoun_gap"], "he_minus_she": t["he_minus_she"]},
            "student": {"pronoun_gap": s["pronoun_gap"], "he_minus_she": s["he_minus_she"]},
            "per_profession": rows,
            "male_tokens": s.get("male_tokens"),
            "female_tokens": s.get("female_tokens"),
        }
        atomic_write(run.probe, json.dumps(summary, indent=2))
        if any(tr.name == "wandb" for tr in self.accelerator.trackers):
            import wandb

            table = wandb.Table(columns=["profession", "teacher_he_minus_she", "student_he_minus_she"])
            for r in rows:
                table.add_data(r["profession"], r["teacher"], r["student"])
            self.accelerator.get_tracker("wandb", unwrap=True).log({"probe/per_profession": table})
