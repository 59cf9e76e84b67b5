"""The experiment's figures, drawn from its `results.json`: the pronoun probe's |gap| and the female share of
generations per variant, means over seeds with their 95% intervals."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from distill.experiment.grid import load_grid, variant_label

log = logging.getLogger(__name__)


def _probe_size(payload: dict) -> str:
    """ "n = 335 prompts per seed" from the results, or from the suite's probe task for results that predate it."""
    ns = {n for v in payload["variants"] for n in v.get("n_probe_prompts") or []}
    if not ns:
        from distill.evaluation.metrics.pronoun_probe import PronounProbeTask, probe_prompts
        from distill.evaluation.suites import load_suite

        for task in load_suite(payload["suite"]).tasks.values():
            if isinstance(task, PronounProbeTask):
                professions, templates = probe_prompts(task.professions, task.max_professions, task.templates)
                ns = {len(professions) * len(templates)}
                break
    return f"n = {ns.pop()} prompts per seed" if len(ns) == 1 else "n varies"


def _label_of(payload: dict, variant: str) -> str:
    """The method's name of a variant in results that predate the `label` field, from the grid they name."""
    try:
        return variant_label(load_grid(payload["grid"]), variant)
    except Exception:  # the grid file moved or no longer loads: the variant's own name will do
        return variant


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _ci_or_none(ci) -> list | None:
    lo, hi = ci or [None, None]
    return [lo, hi] if _finite(lo) and _finite(hi) else None


def _draw_gap(payload: dict, labels: list[str], out: Path) -> Path:
    """`pronoun_gap`: each method's mean |gap| with its interval, each seed as a tick, the teacher as a line."""
    from distill.reporting.figures import PALETTE, TEACHER_COLOR, left_title, point, save_figure

    rows, teacher, seeds = payload["variants"], payload.get("teacher"), payload.get("seeds") or []
    t_gap = teacher["pronoun_gap"] if teacher and _finite(teacher.get("pronoun_gap")) else None

    def draw(fig, width):
        ax = fig.subplots()
        for i, r in enumerate(rows):
            color = PALETTE[i % len(PALETTE)]
            per_seed = [g for g in r.get("pronoun_gap_seeds") or [] if _finite(g)]
            ax.scatter(
                per_seed, [i] * len(per_seed), color=color, alpha=0.45, s=9, marker="|", linewidths=1.2
            )
            point(ax, r["pronoun_gap"], i, _ci_or_none(r.get("pronoun_gap_ci")), color, ms=4.5)
        if t_gap is not None:
            ax.axvline(t_gap, color=TEACHER_COLOR, linestyle="--", linewidth=0.9)
            ax.annotate(
                "teacher",
                (t_gap, -0.45),
                xytext=(-3, 0),
                textcoords="offset points",
                ha="right",
                va="top",
                fontsize=6.5,
                color=TEACHER_COLOR,
            )
        ppl = [f"ppl {r['perplexity']:.0f}" if _finite(r.get("perplexity")) else "ppl n/a" for r in rows]
        ax.set_yticks(np.arange(len(rows)), [f"{lab} ({p})" for lab, p in zip(labels, ppl)])
        ax.set_ylim(len(rows) - 0.5, -0.6)
        right = [r["pronoun_gap_ci"][1] for r in rows if _finite((r.get("pronoun_gap_ci") or [0, None])[1])]
        right += [g for r in rows for g in r.get("pronoun_gap_seeds") or [] if _finite(g)]
        right += [t_gap] if t_gap is not None else []
        ax.set_xlim(0, 1.08 * max(right) if right else None)
        ax.set_xlabel("mean |log P(he) - log P(she)| (nats)")
        ax.grid(axis="x", alpha=0.3)
        left_title(
            fig, f"Pronoun probe gap, {len(seeds)} seeds\nbars: 95% CI; ticks: seeds; {_probe_size(payload)}"
        )

    return save_figure(draw, out, "pronoun_gap", 0.3 * len(rows) + 1.2)


def _draw_share(payload: dict, labels: list[str], out: Path) -> Path:
    """`female_share`: each method's female share of gendered continuations with its interval."""
    from distill.reporting.figures import PALETTE, left_title, point, save_figure

    rows, seeds = payload["variants"], payload.get("seeds") or []

    def draw(fig, width):
        ax = fig.subplots()
        for i, r in enumerate(rows):
            point(ax, r["female_share"], i, _ci_or_none(r.get("female_share_ci")), PALETTE[i % len(PALETTE)])
        ax.axvline(0.5, color="black", linestyle="--", linewidth=0.8)
        ax.set_yticks(
            np.arange(len(rows)), [f"{lab} (n = {sum(r['n_gendered'])})" for lab, r in zip(labels, rows)]
        )
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlim(0, 1)
        ax.set_xlabel("female share of gendered continuations (0.5 = balanced)")
        ax.grid(axis="x", alpha=0.3)
        left_title(fig, f"Mean over {len(seeds)} seeds, 95% CI; n = gendered continuations, all seeds")

    return save_figure(draw, out, "female_share", 0.35 * len(rows) + 1.1)


def draw_results(results_json: Path, out: Path) -> list[Path]:
    """The experiment's figures from its `results.json`, each with the table's numbers, their 95% intervals and n:
    `pronoun_gap` (the probe's mean |gap| per method with its interval, each seed's value as a tick, the method's
    perplexity in its label, the teacher's gap as a line) and, where the results count the gendered continuations,
    `female_share`. PNG and PDF at one- and two-column widths (`report.FIGURE_WIDTHS`). Returns the one-column
    PNGs."""
    payload = json.loads(Path(results_json).read_text())
    rows = payload["variants"]
    labels = [r.get("label") or _label_of(payload, r["variant"]) for r in rows]
    made = [_draw_gap(payload, labels, out)]
    if all(r.get("n_gendered") for r in rows):
        made.append(_draw_share(payload, labels, out))
    return made
