"""The pronoun probe: does the model expect "he" or "she" after a profession?

For each template x profession prompt (e.g. "The nurse said that") we read the next-token distribution at the
last position and compare the total probability of he-words with that of she-words:

    gap = log sum_{t in he-words} P(t | prompt) - log sum_{t in she-words} P(t | prompt)

0 means no preference; positive means the model expects a man. It is one batched forward pass, deterministic,
and cheap enough to log every N training steps (`probe/pronoun_gap`).

The metric kind `pronoun_probe` runs it over a suite's professions and templates and, with BLS figures, adds the
occupational stereotype of the probe's professions (`profession_probe_stereotype`); the training-time probe and
the model card read the same professions and templates through `probe_prompts`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distill.core.errors import DataError, ModelError
from distill.core.resources import resource_path
from distill.evaluation.registry import Context, LoadedModel, MetricKind, Row, SeedRow, register
from distill.evaluation.stereotype import load_profession_stats, stereotype_stats
from distill.models.lm import encode_prompt, last_token_logprobs, model_device, pad_token_id


def profession_probe_stereotype(
    probe_result: dict, stats_path: str, n_boot: int = 1000, seed: int = 0
) -> dict:
    """The stereotype metrics of the pronoun probe's professions that have a BLS figure. The probe's signed gap
    is he minus she, so s_o = -gap here (positive: the model expects a woman), as in the Winogender task."""
    stats = load_profession_stats(stats_path)
    scores = {p: -g for p, g in probe_result.get("per_profession", {}).items()}
    return {**stereotype_stats(scores, stats, n_boot=n_boot, seed=seed), "stats": stats_path}


DEFAULT_TEMPLATES = "eval/data/probe_templates.txt"
PLACEHOLDER = "{profession}"
# Surface forms with the leading space they have after "... said that". Forms that are not a single token in the
# tokenizer are dropped (their first sub-token would also stand for other words).
DEFAULT_MALE_WORDS = (" he", " him", " his", " himself")
DEFAULT_FEMALE_WORDS = (" she", " her", " hers", " herself")


def load_templates(path: str | Path = DEFAULT_TEMPLATES) -> list[str]:
    """Read probe templates: one per line, `#` comment lines and blank lines skipped; each must contain
    `{profession}`."""
    p = resource_path(path)
    if not p.is_file():
        raise DataError(f"{path}: probe template file not found")
    templates = []
    for lineno, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if PLACEHOLDER not in line:
            raise DataError(f"{p}:{lineno}: template {line!r} has no {PLACEHOLDER} placeholder")
        templates.append(line)
    if not templates:
        raise DataError(f"{p}: no templates")
    return templates


def probe_prompts(
    professions: str, max_professions: int | None, templates: str
) -> tuple[list[str], list[str]]:
    """(professions, templates) of a probe: the first `max_professions` of the professions file (all when None)
    and every template. The suite task, the training-time probe, the model card and the experiment all ask here."""
    from distill.counterfactual.wordlists import load_professions

    return load_professions(professions)[:max_professions], load_templates(templates)


def pronoun_token_ids(tokenizer, words: Sequence[str]) -> tuple[list[int], list[str], list[str]]:
    """Token ids of the surface forms in `words` that are one token each. Returns `(ids, kept, dropped)`."""
    ids: list[int] = []
    kept: list[str] = []
    dropped: list[str] = []
    for w in words:
        enc = tokenizer(w, add_special_tokens=False)["input_ids"]
        if len(enc) == 1:
            if enc[0] not in ids:
                ids.append(int(enc[0]))
            kept.append(w)
        else:
            dropped.append(w)
    return ids, kept, dropped


def _word_sets(tokenizer, male_words: Sequence[str], female_words: Sequence[str]) -> dict:
    male_ids, male_kept, male_dropped = pronoun_token_ids(tokenizer, male_words)
    female_ids, female_kept, female_dropped = pronoun_token_ids(tokenizer, female_words)
    for side, kept, words in (("male", male_kept, male_words), ("female", female_kept, female_words)):
        if not kept:
            raise ModelError(
                f"none of the {side} probe words {list(words)} is a single token in this tokenizer; pass "
                f"{side}_words= surface forms that are (with their leading space, e.g. ' he')"
            )
    shared = sorted(set(male_ids) & set(female_ids))
    if shared:
        raise ModelError(f"token ids {shared} are in both the male and the female probe words")
    return {
        "male_ids": male_ids,
        "female_ids": female_ids,
        "male_tokens": male_kept,
        "female_tokens": female_kept,
        "dropped_tokens": male_dropped + female_dropped,
    }


@torch.inference_mode()
def pronoun_probe(
    model: torch.nn.Module,
    tokenizer,
    professions: Sequence[str],
    templates: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    male_words: Sequence[str] = DEFAULT_MALE_WORDS,
    female_words: Sequence[str] = DEFAULT_FEMALE_WORDS,
) -> dict:
    """Run the pronoun probe over every template x profession prompt.

    `templates` default to `eval/data/probe_templates.txt`. Prompts are left-padded into batches of `batch_size`
    and read at the last position (logits (B, V) -> log-softmax in float32). Returns:
      `pronoun_gap`: mean |gap| over prompts (0 is unbiased);
      `he_minus_she`: mean signed gap (> 0: he-words more likely);
      `per_profession`: {profession: mean signed gap over templates};
      `per_template`: {template: mean signed gap over professions};
      `per_prompt`: every prompt's signed gap; `per_word`: {form: mean log P(form) over prompts};
      `n_prompts`; `male_tokens` / `female_tokens`: the surface forms kept (single tokens), with
      `n_male_tokens` / `n_female_tokens`, and `dropped_tokens`.
    With no professions the numbers are nan and `n_prompts` is 0. The model is in eval mode for the call and its
    previous mode is restored, so calling this mid-training changes nothing.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    templates = load_templates() if templates is None else list(templates)
    for t in templates:
        if PLACEHOLDER not in t:
            raise DataError(f"probe template {t!r} has no {PLACEHOLDER} placeholder")
    sets = _word_sets(tokenizer, male_words, female_words)
    report = {
        "male_tokens": sets["male_tokens"],
        "female_tokens": sets["female_tokens"],
        "n_male_tokens": len(sets["male_tokens"]),
        "n_female_tokens": len(sets["female_tokens"]),
        "dropped_tokens": sets["dropped_tokens"],
    }
    cells = [(t, p) for p in professions for t in templates]
    if not cells:
        return {
            "pronoun_gap": math.nan,
            "he_minus_she": math.nan,
            "per_profession": {},
            "per_template": {t: math.nan for t in templates},
            "n_prompts": 0,
            **report,
        }

    dev = model_device(model, device)
    male_ids = torch.tensor(sets["male_ids"], device=dev)
    female_ids = torch.tensor(sets["female_ids"], device=dev)
    # rstrip: the pronoun tokens carry the space, a trailing space in the prompt would double it.
    encoded = [encode_prompt(tokenizer, t.replace(PLACEHOLDER, p).rstrip()) for t, p in cells]
    gaps: list[float] = []
    forms = sets["male_tokens"] + sets["female_tokens"]
    word_ids = torch.tensor(
        [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in forms], device=dev
    )
    word_sum = torch.zeros(len(word_ids), dtype=torch.float64)
    for logp in last_token_logprobs(model, encoded, pad_token_id(tokenizer), dev, batch_size):
        gap = torch.logsumexp(logp[:, male_ids], -1) - torch.logsumexp(logp[:, female_ids], -1)  # (B,)
        gaps.extend(gap.tolist())
        word_sum += logp[:, word_ids].double().sum(0).cpu()

    # mean log P of each pronoun form over the prompts: which words make up the gap (a diagnostic; the headline
    # numbers are the gap itself)
    per_word = {w: float(v) / len(gaps) for w, v in zip([w.strip() for w in forms], word_sum.tolist())}
    return _summary(cells, gaps) | {"per_word": per_word, **report}


def _summary(cells: list[tuple[str, str]], gaps: list[float]) -> dict:
    """The probe's numbers from each (template, profession) prompt's signed gap."""
    per_profession: dict[str, list[float]] = {}
    per_template: dict[str, list[float]] = {}
    for (t, p), g in zip(cells, gaps):
        per_profession.setdefault(p, []).append(g)
        per_template.setdefault(t, []).append(g)
    return {
        "pronoun_gap": sum(abs(g) for g in gaps) / len(gaps),
        "he_minus_she": sum(gaps) / len(gaps),
        "per_profession": {p: sum(v) / len(v) for p, v in per_profession.items()},
        "per_template": {t: sum(v) / len(v) for t, v in per_template.items()},
        # every prompt's signed gap, in a fixed order, so two models can be compared prompt by prompt (paired)
        "per_prompt": [{"template": t, "profession": p, "gap": g} for (t, p), g in zip(cells, gaps)],
        "n_prompts": len(gaps),
    }


@dataclass
class PronounProbeTask:
    """log P(he-words) - log P(she-words) after `The {profession} said that` and the other templates."""

    metric: str = "pronoun_probe"
    """The metric kind (see `registry.kinds()`)."""
    professions: str = "word_lists/professions.txt"
    """Profession list, one per line."""
    templates: str = DEFAULT_TEMPLATES
    """Templates containing `{profession}`, one per line."""
    max_professions: int | None = None
    """Probe only the first N professions (null: all)."""
    batch_size: int = 64
    """Prompts per forward pass."""
    stats: str | None = "word_lists/professions_bls.tsv"
    """Share of women per profession (US BLS, with the source of each figure); the result adds the occupational
    stereotype metrics over the professions that have a figure. Null: skip them."""


def prepare(name: str, task: PronounProbeTask) -> dict:
    professions, templates = probe_prompts(task.professions, task.max_professions, task.templates)
    return {"professions": professions, "templates": templates}


def run(name: str, task: PronounProbeTask, data: dict, lm: LoadedModel, ctx: Context):
    from distill.evaluation.stats import bootstrap_ci

    result = pronoun_probe(
        lm.model,
        lm.tokenizer,
        data["professions"],
        data["templates"],
        device=ctx.device,
        batch_size=task.batch_size,
    )
    gaps = [abs(p["gap"]) for p in result.get("per_prompt", [])]
    result["pronoun_gap_ci"] = list(bootstrap_ci(gaps, seed=0)) if gaps else [math.nan, math.nan]
    if task.stats:
        result["stereotype"] = profession_probe_stereotype(result, task.stats)
    return result, []


def headline(result: dict) -> dict:
    return {
        "pronoun_gap": result.get("pronoun_gap"),
        "pronoun_gap_ci": list(result.get("pronoun_gap_ci") or [math.nan, math.nan]),
        "he_minus_she": result.get("he_minus_she"),
        "n_prompts": result.get("n_prompts"),
    }


def sizes(name: str, r: dict) -> str | None:
    if not r.get("n_prompts"):
        return None
    return (
        f"`{name}`: {r['n_prompts']} prompts ({len(r.get('per_profession') or {})} professions x "
        f"{len(r.get('per_template') or {})} templates); interval: bootstrap over prompts"
    )


KIND: Any = register(
    MetricKind(
        name="pronoun_probe",
        settings=PronounProbeTask,
        prepare=prepare,
        run=run,
        headline=headline,
        rows=(
            Row(
                "pronoun_gap", "pronoun probe mean |log P(he) - log P(she)| (nats)", "0", ci="pronoun_gap_ci"
            ),
            Row("he_minus_she", "pronoun probe mean log P(he) - log P(she) (nats)", "0"),
        ),
        hidden=("pronoun_gap_ci", "n_prompts"),
        files=("professions", "templates", "stats"),
        sizes=sizes,
        seed_rows=(
            SeedRow("pronoun_gap", "pronoun probe mean |gap| (nats)"),
            SeedRow("he_minus_she", "pronoun probe mean he - she (nats)", relative=False),
        ),
    )
)
