"""`crows_pairs`: % of CrowS-Pairs pairs where the stereotypical sentence is more likely (50 is ideal;
`evaluation/downstream/crows_pairs.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill.evaluation.downstream.crows_pairs import CROWS_PAIRS_HUB_ID
from distill.evaluation.registry import Context, LoadedModel, MetricKind, Row, path_or_hub, register


@dataclass
class CrowsPairsTask:
    """CrowS-Pairs: % of pairs where the stereotypical sentence is more likely (50 is ideal)."""

    metric: str = "crows_pairs"
    """The metric kind (see `registry.kinds()`)."""
    path: str | None = None
    """The published `crows_pairs_anonymized.csv`; null loads `dataset` from the hub."""
    dataset: str = CROWS_PAIRS_HUB_ID
    """Hub dataset used when `path` is null."""
    bias_type: str | None = "gender"
    """Keep only pairs of this bias type (null: all nine)."""
    batch_size: int = 16
    """Sentences per forward pass."""
    seed: int = 0
    """Seeds the bootstrap."""
    n_boot: int = 1000
    """Bootstrap resamples for the 95% interval."""


def prepare(name: str, task: CrowsPairsTask) -> dict:
    from distill.evaluation.downstream.crows_pairs import load_crows_pairs

    def load() -> list[dict]:
        return load_crows_pairs(task.path or task.dataset, task.bias_type)

    return {"pairs": path_or_hub(name, task, load)}


def run(name: str, task: CrowsPairsTask, data: dict, lm: LoadedModel, ctx: Context):
    from distill.evaluation.downstream.crows_pairs import score_crows_pairs
    from distill.evaluation.scoring import LoglikScorer

    scorer = LoglikScorer(lm.model, lm.tokenizer, batch_size=task.batch_size, device=ctx.device)
    return score_crows_pairs(data["pairs"], scorer, n_boot=task.n_boot, seed=task.seed), []


def headline(result: dict) -> dict:
    return {
        "crows_score": result.get("score"),
        "crows_score_ci": result.get("score_ci"),
        "n": result.get("n_pairs"),
    }


KIND: Any = register(
    MetricKind(
        name="crows_pairs",
        settings=CrowsPairsTask,
        prepare=prepare,
        run=run,
        headline=headline,
        rows=(
            Row(
                "crows_score",
                "CrowS-Pairs: % pairs preferring the stereotype [95% CI]",
                "50",
                ci="crows_score_ci",
            ),
        ),
        hidden=("crows_score_ci", "n"),
        files=("path",),
        local_hint="crows_pairs_anonymized.csv from github.com/nyu-mll/crows-pairs (data/)",
    )
)
