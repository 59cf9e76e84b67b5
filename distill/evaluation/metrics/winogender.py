"""`winogender`: occupational stereotype on Winogender templates (`evaluation/stereotype.py`): per-occupation
log P(she) - log P(he) at the pronoun slot, its association with BLS % women and with the teacher's scores,
spread and lean, for all occupations and for those unseen in the transfer prompts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.evaluation.registry import Context, LoadedModel, MetricKind, Row, did_you_mean, register
from distill.evaluation.stereotype import PLOT_SUFFIX, STATS_COLUMNS, WINOGENDER_DIR


@dataclass
class WinogenderTask:
    """Occupational stereotype on Winogender templates: per-occupation log P(she) - log P(he) at the pronoun slot,
    its association with BLS % women and with the teacher's scores, spread and lean, seen vs unseen occupations."""

    metric: str = "winogender"
    """The metric kind (see `registry.kinds()`)."""
    path: str = WINOGENDER_DIR
    """Folder holding Winogender's templates.tsv and occupations-stats.tsv."""
    statistic: str = "bls_pct_female"
    """Column of occupations-stats.tsv the association is computed against: bls_pct_female or bergsma_pct_female."""
    prompts: str | None = None
    """Transfer prompt file that decides which occupations are `seen`; null: the run's own `data.prompts` when
    the checkpoint is a run directory sampled from prompts, else recipes/data/occupation_lines.txt."""
    batch_size: int = 64
    """Prompts per forward pass."""
    n_boot: int = 1000
    """Bootstrap resamples (over occupations) for the 95% intervals."""
    seed: int = 0
    """Seeds the bootstrap."""
    plot: bool = True
    """Write the scatter of occupation score vs % women (`<suite>_winogender.png`) next to the results."""


def check(where: str, task: WinogenderTask, problems: list[str]) -> None:
    if isinstance(task.statistic, str) and task.statistic not in STATS_COLUMNS:
        problems.append(
            f"{where}.statistic must be one of {', '.join(STATS_COLUMNS)}, got {task.statistic!r}"
            + did_you_mean(task.statistic, STATS_COLUMNS)
        )


def prepare(name: str, task: WinogenderTask) -> dict:
    from distill.evaluation.stereotype import load_occupation_stats, load_templates

    return {"prompts": load_templates(task.path), "stats": load_occupation_stats(task.path, task.statistic)}


def run(name: str, task: WinogenderTask, data: dict, lm: LoadedModel, ctx: Context):
    """Evaluate one model; with the run's teacher at hand, also the student's association with the teacher's
    scores (`r_teacher`)."""
    from distill.evaluation.stereotype import (
        occupation_scores,
        occupations_seen,
        scorable,
        slot_scores,
        transfer_prompts,
        winogender_eval,
    )

    prompts, stats = data["prompts"], data["stats"]
    source, lines = transfer_prompts(task.prompts, ctx.run_cfg)
    seen = occupations_seen({p.occupation for p in prompts}, lines)
    teacher_scores = None
    if ctx.teacher is not None and ctx.teacher.model is not lm.model:
        usable = scorable(ctx.teacher.tokenizer, prompts)[0]
        raw = slot_scores(ctx.teacher.model, ctx.teacher.tokenizer, usable, ctx.device, task.batch_size)
        teacher_scores = occupation_scores(usable, raw)
    out = winogender_eval(
        lm.model,
        lm.tokenizer,
        prompts,
        stats,
        teacher_scores,
        seen,
        device=ctx.device,
        batch_size=task.batch_size,
        n_boot=task.n_boot,
        seed=task.seed,
    )
    out.update(
        {
            "statistic": task.statistic,
            "seen_from": source,
            "teacher_per_occupation": teacher_scores,
            "stats": {o: stats[o] for o in out["per_occupation"] if o in stats},
            "plot": bool(task.plot),
        }
    )
    return out, []


_HEADLINE = (
    ("r_bls", "association r with BLS % women", "0"),
    ("r_teacher", "association r with the teacher's scores", "0"),
    ("spread", "spread: sd of occupation scores (nats)", "0"),
    ("lean", "lean: mean occupation score, she - he (nats)", "0"),
)
_PARTS = (("all", ""), ("unseen", "_unseen"))
# All occupations first, then the unseen ones.
ROWS = tuple(
    Row(f"{k}{suffix}", f"Winogender {label}{where} [95% CI]", ideal, ci=f"{k}{suffix}_ci")
    for suffix, where in (("", ""), ("_unseen", ", unseen occupations"))
    for k, label, ideal in _HEADLINE
) + (
    Row("mean_abs", "Winogender mean |occupation score| (nats; secondary)", "0"),
    Row("n_unseen", "Winogender occupations unseen in the transfer prompts", ""),
)


def headline(result: dict) -> dict:
    """The table numbers of a Winogender result: all occupations, and those unseen in the transfer prompts."""
    out: dict = {}
    for part, suffix in _PARTS:
        st = result.get(part)
        if not isinstance(st, dict):
            continue
        for key, _, _ in _HEADLINE:
            if key in st:
                out[f"{key}{suffix}"] = st[key]
                out[f"{key}{suffix}_ci"] = st.get(f"{key}_ci")
        out[f"n{suffix}"] = st.get("n")
    out["mean_abs"] = (result.get("all") or {}).get("mean_abs")
    return out


def plot(payload: dict, name: str, stem: Path) -> None:
    """The scatter of the task (the teacher too, when its scores were taken) as `<stem>_winogender.png`, the
    task's name added when the suite has several Winogender tasks."""
    from distill.evaluation.stereotype import stereotype_plot, stereotype_stats

    r = payload["tasks"][name]["result"]
    if not r.get("plot") or not r.get("stats"):
        return
    label = (payload.get("model") or {}).get("label") or "model"
    series = []
    if r.get("teacher_per_occupation"):
        tsc = r["teacher_per_occupation"]
        series.append(("teacher", tsc, stereotype_stats(tsc, r["stats"], n_boot=1000, seed=0)))
    series.append((label, r["per_occupation"], r["all"]))
    seen = set(r["seen_occupations"]) if r.get("seen_occupations") is not None else None
    several = sum(t.get("metric") == "winogender" for t in payload.get("tasks", {}).values()) > 1
    stereotype_plot(series, r["stats"], f"{stem}{f'_{name}' if several else ''}{PLOT_SUFFIX}", seen=seen)


KIND: Any = register(
    MetricKind(
        name="winogender",
        settings=WinogenderTask,
        prepare=prepare,
        run=run,
        headline=headline,
        rows=ROWS,
        hidden=("n", *(r.ci for r in ROWS if r.ci)),
        files=("path", "prompts"),
        check=check,
        needs=lambda task: frozenset({"teacher"}),
        after_write=plot,
    )
)
