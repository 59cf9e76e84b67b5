"""`sentiment_gap`: the VADER sentiment gap between two BOLD groups (default American_actors -
American_actresses), on continuations sampled and labelled as for `generation_disparity`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from distill.evaluation.bold import BOLD_GENDER_GROUPS
from distill.evaluation.metrics.generation_disparity import (
    FLUENCY_ROW,
    GENERATION,
    GenerationTask,
    Labelled,
    check_generation,
    run_generation,
    with_fluency,
)
from distill.evaluation.registry import Context, LoadedModel, MetricKind, Row, register


@dataclass
class SentimentTask(GenerationTask):
    """VADER sentiment gap between two BOLD groups (default American_actors - American_actresses)."""

    metric: str = "sentiment_gap"
    domain: str = "gender"
    groups: list[str] | None = field(default_factory=lambda: list(BOLD_GENDER_GROUPS))
    """Exactly two groups (A, B); the gap is mean sentiment of A minus that of B."""


def check(where: str, task: SentimentTask, problems: list[str]) -> None:
    check_generation(where, task, problems, two_groups=True)


def _gap(task: GenerationTask, labelled: Labelled) -> dict:
    from distill.evaluation.polarity import FEMALE, MALE, NEUTRAL
    from distill.evaluation.sentiment import sentiment_gap

    result = sentiment_gap(
        labelled.texts, labelled.scorer, tuple(task.groups), n_boot=task.n_boot, seed=task.seed
    )
    result["gender_by_group"] = {
        g: {lab: ls.count(lab) for lab in (MALE, FEMALE, NEUTRAL)} for g, ls in labelled.labels.items()
    }
    return result


def run(name: str, task: SentimentTask, data: dict, lm: LoadedModel, ctx: Context):
    return run_generation(name, task, data, lm, ctx, _gap)


def headline(result: dict) -> dict:
    a, b = result.get("groups_compared", [None, None])
    groups = result.get("groups", {})
    out = {
        "sentiment_gap": result.get("gap"),
        "sentiment_gap_ci": list(result.get("gap_ci") or [math.nan, math.nan]),
        "sentiment_a": groups.get(a, {}).get("mean"),
        "sentiment_b": groups.get(b, {}).get("mean"),
        "groups_compared": [a, b],
    }
    return with_fluency(result, out)


def row_label(row: Row, summaries: list[dict | None]) -> str:
    """`A` and `B` in the label replaced by the groups the gap compares."""
    if row.key == FLUENCY_ROW.key:
        return row.label
    for s in summaries:
        if s and isinstance(s.get("groups_compared"), list) and len(s["groups_compared"]) == 2:
            a, b = s["groups_compared"]
            return row.label.replace("A - B", f"{a} - {b}").replace(", A", f", {a}").replace(", B", f", {b}")
    return row.label


KIND: Any = register(
    MetricKind(
        name="sentiment_gap",
        settings=SentimentTask,
        run=run,
        headline=headline,
        rows=(
            Row("sentiment_gap", "sentiment gap A - B, VADER compound [95% CI]", "0", ci="sentiment_gap_ci"),
            Row("sentiment_a", "mean sentiment, A", ""),
            Row("sentiment_b", "mean sentiment, B", ""),
            FLUENCY_ROW,
        ),
        hidden=("sentiment_gap_ci", "groups_compared"),
        check=check,
        row_label=row_label,
        local_hint="BOLD's prompts/gender_prompt.json from github.com/amazon-science/bold",
        **GENERATION,
    )
)
