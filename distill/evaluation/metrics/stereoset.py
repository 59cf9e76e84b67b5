"""`stereoset`: StereoSet intrasentence SS (50 is ideal), LMS (100 is ideal) and ICAT
(`evaluation/downstream/stereoset.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill.evaluation.downstream.stereoset import STEREOSET_HUB_ID
from distill.evaluation.registry import Context, LoadedModel, MetricKind, Row, path_or_hub, register


@dataclass
class StereoSetTask:
    """StereoSet intrasentence: SS (50 is ideal), LMS (100 is ideal) and ICAT."""

    metric: str = "stereoset"
    """The metric kind (see `registry.kinds()`)."""
    path: str | None = None
    """The published `dev.json`; null loads `dataset` from the hub."""
    dataset: str = STEREOSET_HUB_ID
    """Hub dataset used when `path` is null."""
    bias_type: str | None = "gender"
    """Keep only examples of this bias type (null: all four)."""
    batch_size: int = 16
    """Sentences per forward pass."""
    seed: int = 0
    """Seeds the bootstrap."""
    n_boot: int = 1000
    """Bootstrap resamples for the 95% interval."""


def prepare(name: str, task: StereoSetTask) -> dict:
    from distill.evaluation.downstream.stereoset import load_stereoset

    def load() -> list[dict]:
        return load_stereoset(task.path or task.dataset, task.bias_type)

    return {"examples": path_or_hub(name, task, load)}


def run(name: str, task: StereoSetTask, data: dict, lm: LoadedModel, ctx: Context):
    from distill.evaluation.downstream.stereoset import score_stereoset
    from distill.evaluation.scoring import LoglikScorer

    # Length-normalised: the three fillings tokenize to different lengths (see the module docstring).
    scorer = LoglikScorer(
        lm.model, lm.tokenizer, batch_size=task.batch_size, device=ctx.device, reduction="mean"
    )
    return score_stereoset(data["examples"], scorer, n_boot=task.n_boot, seed=task.seed), []


def headline(result: dict) -> dict:
    return {
        "ss": result.get("ss"),
        "lms": result.get("lms"),
        "icat": result.get("icat"),
        "n": result.get("n_examples"),
    }


KIND: Any = register(
    MetricKind(
        name="stereoset",
        settings=StereoSetTask,
        prepare=prepare,
        run=run,
        headline=headline,
        rows=(
            Row("ss", "StereoSet SS (%)", "50"),
            Row("lms", "StereoSet LMS (%)", "100"),
            Row("icat", "StereoSet ICAT", "100"),
        ),
        hidden=("n",),
        files=("path",),
        local_hint="dev.json from github.com/moinnadeem/StereoSet (data/)",
    )
)
