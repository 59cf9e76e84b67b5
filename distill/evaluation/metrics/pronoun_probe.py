"""`pronoun_probe`: log P(he-words) - log P(she-words) after `The {profession} said that` and the other
templates (`evaluation/probe.py`); with BLS figures, the occupational stereotype of the probe's professions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from distill.evaluation.probe import DEFAULT_TEMPLATES
from distill.evaluation.registry import Context, LoadedModel, MetricKind, Row, register


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
    from distill.counterfactual.wordlists import load_professions
    from distill.evaluation.probe import load_templates

    professions = load_professions(task.professions)[: task.max_professions]
    return {"professions": professions, "templates": load_templates(task.templates)}


def run(name: str, task: PronounProbeTask, data: dict, lm: LoadedModel, ctx: Context):
    from distill.evaluation.probe import pronoun_probe
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
        from distill.evaluation.stereotype import profession_probe_stereotype

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
    )
)
