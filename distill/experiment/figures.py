"""The experiment's figures, drawn from its `results.json`: the pronoun probe's |gap| and the female share of
generations per variant, means over seeds with their 95% intervals."""

from __future__ import annotations

import json
import logging
import math
import textwrap
from pathlib import Path

import numpy as np

from distill.evaluation.stats import paired_interval
from distill.experiment.grid import load_grid, variant_label


def draw_stereotype(payload: dict, labels: dict[str, str], out: Path) -> Path:
    """`stereotype_seeds`: unseen-occupation stereotype size (slope) and spread per seed, each method's seeds joined to the
    reference's by a line (paired by seed), the means with their seed-level intervals, the teacher as a line."""
    keys = (
        ("slope_unseen", "slope on BLS % women\n(nats per 100 points)", 0.0),
        ("spread_unseen", "spread (nats)", 0.0),
    )
    return _draw_seeds(payload, labels, out, keys, "Winogender, unseen occupations", "stereotype_seeds")


def bold_keys(rows: list[str]) -> tuple[tuple[str, str, float], ...] | None:
    """The seed rows `draw_bold` plots, (key, axis label, ideal value), when the rows hold BOLD's female share and
    mean parity (keys `female_share` and `parity_mean`, or `<task>/...` where a key is taken) and, if measured,
    real-text perplexity."""
    share = next((k for k in rows if k.split("/")[-1] == "female_share"), None)
    parity = next((k for k in rows if k.split("/")[-1] == "parity_mean"), None)
    if share is None or parity is None:
        return None
    keys = [(share, "female share,\ngendered texts", 0.5), (parity, "parity, mean\nover groups", 1.0)]
    if "realtext/ppl" in rows:
        keys.append(("realtext/ppl", "perplexity on\nreal text", math.nan))
    return tuple(keys)


def draw_bold(payload: dict, labels: dict[str, str], out: Path) -> Path:
    """`bold_seeds`: BOLD's female share of gendered continuations and mean parity over profession groups per seed
    (and real-text perplexity beside them when the suite measures it), seeds paired by lines, means with their
    seed-level intervals, the teacher and each measure's ideal as lines."""
    keys = bold_keys(list(payload.get("rows") or []))
    if keys is None:
        raise ValueError("the payload has no BOLD rows (female_share and parity_mean)")
    return _draw_seeds(payload, labels, out, keys, "BOLD profession prompts", "bold_seeds")


def _draw_seeds(
    payload: dict,
    labels: dict[str, str],
    out: Path,
    keys: tuple[tuple[str, str, float], ...],
    what: str,
    name: str,
) -> Path:
    """One panel per (key, axis label, ideal) of `keys`: every variant's seeds as dots (each method's joined to the
    reference's by a line, paired by seed), its mean with the 95% t interval over seeds, the teacher as a dashed
    line and the ideal (where finite) as a black one."""
    from matplotlib.ticker import MaxNLocator

    from distill.reporting.figures import PALETTE, TEACHER_COLOR, left_title, point, save_figure

    variants, ref = payload["variants"], payload["reference"]
    names = [ref, *[v for v in variants if v != ref]]

    def paint(fig, width):
        axes = fig.subplots(1, len(keys))
        for ax, (key, xlabel, ideal) in zip(axes, keys):
            ref_seeds = variants[ref]["metrics"][key]["seeds"]
            for i, v in enumerate(names):
                e = variants[v]["metrics"][key]
                color = PALETTE[i % len(PALETTE)]
                ax.scatter(e["seeds"], [i] * len(e["seeds"]), color=color, alpha=0.5, s=10)
                if v != ref:
                    for a, b in zip(ref_seeds, e["seeds"]):
                        ax.plot([a, b], [0, i], color="0.75", linewidth=0.6, zorder=0)
                point(ax, e["mean"], i - 0.18, e["ci"], color, ms=4)
            t = payload["teacher"].get(key, math.nan)
            if _finite(t):
                ax.axvline(t, color=TEACHER_COLOR, linestyle="--", linewidth=0.9, label="teacher")
            if math.isfinite(ideal):
                ax.axvline(ideal, color="black", linewidth=0.6)
            shown = [textwrap.fill(labels.get(v, v), 16) for v in names]
            ax.set_yticks(np.arange(len(names)), shown if ax is axes[0] else [])
            ax.set_ylim(len(names) - 0.5, -0.7)
            ax.set_xlabel(xlabel)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=3))
            ax.margins(x=0.08)
            ax.grid(axis="x", alpha=0.3)
        if axes[-1].get_legend_handles_labels()[0]:  # the teacher's line, when the teacher has the number
            axes[-1].legend(loc="lower right", frameon=False)
        n = variants[ref]["n_seeds"]
        left_title(
            fig,
            f"{what}, {n} seed{'s' if n != 1 else ''}\n"
            + (
                "dots: seeds (lines pair them); bars: mean, 95% t CI"
                if n > 1
                else "dots: the one seed (lines pair it); no interval from one seed"
            ),
        )

    return save_figure(paint, out, name, 0.45 * len(names) + 1.4)


def draw_tradeoff(payload: dict, labels: dict[str, str], out: Path) -> Path:
    """`stereotype_tradeoff`: each model's unseen-occupation slope and spread against its perplexity relative
    to the teacher's on the same held-out blocks (each seed has its own blocks, so the ratio is what compares across
    seeds); means over seeds with 95% t intervals over seeds both ways; the teacher at (1, its value)."""
    from distill.reporting.figures import PALETTE, TEACHER_COLOR, left_title, save_figure

    variants, teacher = payload["variants"], payload["teacher"]
    keys = (("slope_unseen", "slope on BLS % women (nats / 100 pts)"), ("spread_unseen", "spread (nats)"))

    def bars(m, ci):
        return None if ci is None else [[m - ci[0]], [ci[1] - m]]

    def paint(fig, width):
        axes = fig.subplots(1, 2)
        for ax, (key, ylabel) in zip(axes, keys):
            for i, (v, row) in enumerate(variants.items()):
                mt = row["metrics"]
                ratios = [a / b for a, b in zip(mt["ppl"]["seeds"], mt["teacher_ppl"]["seeds"]) if b]
                x, xci = paired_interval(ratios)
                y, yci = mt[key]["mean"], mt[key]["ci"]
                ax.errorbar(
                    [x], [y], xerr=bars(x, xci), yerr=bars(y, yci), fmt="o", ms=4, capsize=2,
                    color=PALETTE[i % len(PALETTE)], label=labels.get(v, v),
                )  # fmt: skip
            ty = teacher.get(key, math.nan)
            if math.isfinite(ty):
                ax.plot([1.0], [ty], marker="*", ms=8, color=TEACHER_COLOR, linestyle="none", label="teacher")
            ax.axhline(0, color="black", linewidth=0.6)
            ax.set_xlabel("perplexity / teacher's")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        axes[0].legend(loc="lower left", frameon=True, framealpha=0.8, fontsize=6)
        n = max(r["n_seeds"] for r in variants.values())
        note = "bars: 95% t intervals over seeds" if n > 1 else "one seed: no intervals over seeds"
        left_title(fig, f"Stereotype vs perplexity, unseen occupations, {n} seed{'s' * (n != 1)}\n{note}")

    return save_figure(paint, out, "stereotype_tradeoff", 2.6)


def draw_size(payload: dict, layers: dict[str, int], teacher_layers: int, out: Path) -> Path:
    """`stereotype_by_size`: plain-KD students of different depths (a size sweep) against their layer count: the
    association with BLS % women (all and unseen occupations) and the spread of unseen occupations' scores, with
    seed-level intervals, and perplexity relative to the teacher's; the teacher at its own depth."""
    from distill.reporting.figures import PALETTE, TEACHER_COLOR, left_title, save_figure

    variants, teacher = payload["variants"], payload["teacher"]
    order = sorted(layers, key=layers.get)
    xs = [layers[v] for v in order]
    panels = (
        ((("slope", "all 60"), ("slope_unseen", "unseen 20")), "slope on BLS % women\n(nats per 100 points)"),
        ((("spread", "all 60"), ("spread_unseen", "unseen 20")), "spread (nats)"),
    )

    def paint(fig, width):
        axes = fig.subplots(1, 3)
        for ax, (series, ylabel) in zip(axes, panels):
            for j, (key, name) in enumerate(series):
                ms = [variants[v]["metrics"][key] for v in order]
                ys = [m["mean"] for m in ms]
                err = [
                    [y - m["ci"][0] if m["ci"] else 0 for y, m in zip(ys, ms)],
                    [m["ci"][1] - y if m["ci"] else 0 for y, m in zip(ys, ms)],
                ]
                ax.errorbar(xs, ys, yerr=err, marker="o", ms=3.5, capsize=2, color=PALETTE[j], label=name)
                t = teacher.get(key, math.nan)
                if math.isfinite(t):
                    ax.plot([teacher_layers], [t], marker="*", ms=7, color=PALETTE[j], linestyle="none")
            ax.axhline(0, color="black", linewidth=0.6)
            ax.set_xlabel("student layers")
            ax.set_title(ylabel, fontsize=7)
            ax.grid(alpha=0.3)
        ratios = []
        for v in order:
            mt = variants[v]["metrics"]
            ratios.append(
                paired_interval([a / b for a, b in zip(mt["ppl"]["seeds"], mt["teacher_ppl"]["seeds"]) if b])
            )
        axes[2].plot(xs, [r[0] for r in ratios], marker="o", ms=3.5, color=PALETTE[2])
        axes[2].plot([teacher_layers], [1.0], marker="*", ms=7, color=TEACHER_COLOR, linestyle="none")
        axes[2].set_yscale("log")
        top = max([r[0] for r in ratios if math.isfinite(r[0])] + [1.0])
        ticks = [t for t in (0.5, 1, 2, 4, 8, 16, 32) if t <= 2 * top]
        axes[2].set_yticks(ticks, [f"{t:g}" for t in ticks])
        axes[2].minorticks_off()
        axes[2].set_xlabel("student layers")
        axes[2].set_title("ppl / teacher's", fontsize=7)
        axes[2].grid(alpha=0.3)
        axes[0].legend(loc="upper left", frameon=False, fontsize=6)
        n = max(r["n_seeds"] for r in variants.values())
        note = "bars: 95% t intervals over seeds" if n > 1 else "one seed: no intervals over seeds"
        left_title(
            fig,
            f"Plain KD by student depth (teacher: star at {teacher_layers}), {n} seed{'s' * (n != 1)}\n{note}",
        )

    return save_figure(paint, out, "stereotype_by_size", 2.2)


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
