"""`pronoun_agreement`: does the model still use the pronoun the context decides? The guard that no debiasing
method may break: a method that made "she" and "he" equally likely everywhere would erase the stereotype and
grammar with it.

Each prompt names someone whose gender the context settles (a gendered noun, a title, a first name, an earlier
pronoun) and stops just before a pronoun that can only refer to them (`eval/data/agreement/`: 74 subjects x 10
frames = 740 prompts, "My aunt said that" -> " she", "Mr. Nowak picked up" -> " his"). At that position:

    margin(prompt) = log P(the context's form | prompt) - log P(the other form | prompt)      (nats)
    agreement      = % of prompts with margin > 0

with nominative forms ` she` / ` he` and possessive ` her` / ` his`. Both with 95% bootstrap intervals over
prompts, and per kind of subject and per gender (a model that always says "she" scores 50%, not 100%).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distill.core.errors import DataError, ModelError
from distill.core.resources import resource_path
from distill.evaluation.registry import (
    Context,
    LoadedModel,
    MetricKind,
    Row,
    SeedRow,
    check_range,
    register,
)
from distill.evaluation.stats import bootstrap_ci

if TYPE_CHECKING:  # torch is imported where a model runs, so reports and suite checks load without it
    import torch

AGREEMENT_DIR = "eval/data/agreement"
# case -> (female form, male form), with the leading space they have mid-sentence
FORMS = {"nom": (" she", " he"), "poss": (" her", " his")}
GENDERS = ("female", "male")
KINDS = ("noun", "title", "name_listed", "name_unlisted", "pronoun")


@dataclass(frozen=True)
class AgreementPrompt:
    """One prompt: its text, the gender its context decides, the kind of subject and the pronoun's case."""

    text: str
    gender: str
    kind: str
    case: str


def _rows(path: Path, header: tuple[str, ...]) -> list[list[str]]:
    if not path.is_file():
        raise DataError(
            f"{path}: pronoun-agreement file not found; give a folder holding subjects.tsv and frames.tsv"
        )
    with path.open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t") if r and not r[0].startswith("#")]
    if not rows or tuple(c.strip() for c in rows[0]) != header:
        raise DataError(f"{path}: the first row must be the header {'<TAB>'.join(header)}")
    for n, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise DataError(f"{path}: row {n} has {len(r)} tab-separated columns, expected {len(header)}")
    return rows[1:]


def load_prompts(folder: str | Path = AGREEMENT_DIR) -> list[AgreementPrompt]:
    """Every subject of `subjects.tsv` in every frame of `frames.tsv`, frame by frame."""
    root = resource_path(folder)
    subjects = _rows(root / "subjects.tsv", ("subject", "gender", "kind"))
    frames = _rows(root / "frames.tsv", ("frame", "case"))
    for subject, gender, kind in subjects:
        if gender not in GENDERS or kind not in KINDS:
            raise DataError(
                f"{root / 'subjects.tsv'}: {subject!r} has gender {gender!r} and kind {kind!r}; "
                f"genders are {', '.join(GENDERS)}, kinds {', '.join(KINDS)}"
            )
    out = []
    for frame, case in frames:
        if case not in FORMS or "{subject}" not in frame:
            raise DataError(
                f"{root / 'frames.tsv'}: {frame!r} needs a {{subject}} slot and a case in {', '.join(FORMS)}"
            )
        for subject, gender, kind in subjects:
            text = frame.replace("{subject}", subject)
            out.append(AgreementPrompt(text[0].upper() + text[1:], gender, kind, case))
    if not out:
        raise DataError(f"{root}: no pronoun-agreement prompts (empty subjects.tsv or frames.tsv)")
    return out


def _form_id(tokenizer, form: str) -> int:
    ids = tokenizer(form, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ModelError(f"pronoun form {form!r} is {len(ids)} tokens in this tokenizer; agreement needs one")
    return int(ids[0])


def margins(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[AgreementPrompt],
    device: str | torch.device | None = None,
    batch_size: int = 64,
) -> list[float]:
    """log P(the context's form) - log P(the other form) after each prompt (nats), in order; one batched,
    left-padded pass read at the last position in float32."""
    import torch

    from distill.models.lm import encode_prompt, last_token_logprobs, model_device, pad_token_id

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = model_device(model, device)
    ids = {c: tuple(_form_id(tokenizer, f) for f in FORMS[c]) for c in {p.case for p in prompts}}
    right = torch.tensor([ids[p.case][GENDERS.index(p.gender)] for p in prompts], device=dev)
    wrong = torch.tensor([ids[p.case][1 - GENDERS.index(p.gender)] for p in prompts], device=dev)
    encoded = [encode_prompt(tokenizer, p.text) for p in prompts]
    out: list[float] = []
    batches = last_token_logprobs(model, encoded, pad_token_id(tokenizer), dev, batch_size)
    for b, logp in zip(range(0, len(encoded), batch_size), batches):
        rows = torch.arange(logp.shape[0], device=dev)
        out.extend((logp[rows, right[b : b + batch_size]] - logp[rows, wrong[b : b + batch_size]]).tolist())
    return out


def _share_correct(m: np.ndarray) -> float:
    return 100.0 * float((m > 0).mean())


def agreement_stats(
    prompts: Sequence[AgreementPrompt], scores: Sequence[float], n_boot: int = 1000, seed: int = 0
) -> dict:
    """Agreement (% of prompts with margin > 0) and the mean margin, each with a 95% bootstrap interval over
    prompts (none when `n_boot` is 0), overall, per kind of subject and per gender."""
    m = np.asarray(scores, dtype=float)
    if len(m) != len(prompts) or len(m) == 0:
        raise ValueError(f"agreement needs one margin per prompt, got {len(m)} for {len(prompts)}")
    ci = (lambda x, f: list(bootstrap_ci(x, f, n_boot=n_boot, seed=seed))) if n_boot else (lambda x, f: None)
    out: dict[str, Any] = {
        "agreement": _share_correct(m),
        "agreement_ci": ci(m, _share_correct),
        "margin": float(m.mean()),
        "margin_ci": ci(m, None),
        "n": len(m),
    }
    for attr, values in (("kind", KINDS), ("gender", GENDERS)):
        part = {}
        for v in values:
            sel = np.array([getattr(p, attr) == v for p in prompts])
            if sel.any():
                part[v] = {
                    "agreement": _share_correct(m[sel]),
                    "margin": float(m[sel].mean()),
                    "n": int(sel.sum()),
                }
        out[f"per_{attr}"] = part
    return out


def live_probe(model, tokenizer, prompts: Sequence[AgreementPrompt], device=None) -> dict[str, float]:
    """The training-time guard: `probe/agreement` (%) and `probe/agreement_margin` (nats), no intervals."""
    st = agreement_stats(prompts, margins(model, tokenizer, prompts, device=device), n_boot=0)
    return {"probe/agreement": st["agreement"], "probe/agreement_margin": st["margin"]}


# --------------------------------------------------------------------------------------------------------------
# The metric kind


@dataclass
class PronounAgreementTask:
    """Pronoun agreement where the context decides the gender: % correct and the mean log-ratio margin."""

    metric: str = "pronoun_agreement"
    """The metric kind (see `registry.kinds()`)."""
    path: str = AGREEMENT_DIR
    """Folder holding subjects.tsv and frames.tsv."""
    batch_size: int = 64
    """Prompts per forward pass."""
    n_boot: int = 1000
    """Bootstrap resamples (over prompts) for the 95% intervals."""
    seed: int = 0
    """Seeds the bootstrap."""


def check(where: str, task: PronounAgreementTask, problems: list[str]) -> None:
    check_range(problems, f"{where}.batch_size", task.batch_size, 1)
    check_range(problems, f"{where}.n_boot", task.n_boot, 0)


def prepare(name: str, task: PronounAgreementTask) -> dict:
    return {"prompts": load_prompts(task.path)}


def run(name: str, task: PronounAgreementTask, data: dict, lm: LoadedModel, ctx: Context):
    prompts = data["prompts"]
    scores = margins(lm.model, lm.tokenizer, prompts, ctx.device, task.batch_size)
    result = agreement_stats(prompts, scores, task.n_boot, task.seed)
    result["per_prompt"] = [
        {"text": p.text, "gender": p.gender, "kind": p.kind, "margin": s} for p, s in zip(prompts, scores)
    ]
    return result, []


def headline(result: dict) -> dict:
    nan2 = [math.nan, math.nan]
    return {
        "agreement": result.get("agreement"),
        "agreement_ci": list(result.get("agreement_ci") or nan2),
        "agreement_margin": result.get("margin"),
        "agreement_margin_ci": list(result.get("margin_ci") or nan2),
        "n_agreement": result.get("n"),
    }


def sizes(name: str, r: dict) -> str | None:
    if not r.get("n"):
        return None
    kinds = ", ".join(f"{k} {v['n']}" for k, v in (r.get("per_kind") or {}).items())
    return f"`{name}`: {r['n']} prompts ({kinds}); interval: bootstrap over prompts"


KIND: Any = register(
    MetricKind(
        name="pronoun_agreement",
        settings=PronounAgreementTask,
        prepare=prepare,
        run=run,
        headline=headline,
        rows=(
            Row(
                "agreement",
                "pronoun agreement: % where the context's pronoun is likelier [95% CI]",
                "100",
                ci="agreement_ci",
            ),
            Row(
                "agreement_margin",
                "pronoun agreement: mean margin (nats) [95% CI]",
                "higher",
                ci="agreement_margin_ci",
            ),
        ),
        hidden=("agreement_ci", "agreement_margin_ci", "n_agreement"),
        files=("path",),
        check=check,
        sizes=sizes,
        seed_rows=(
            SeedRow("agreement", "pronoun agreement (% correct, context decides the gender)"),
            SeedRow("agreement_margin", "pronoun agreement: mean margin (nats)"),
        ),
    )
)
