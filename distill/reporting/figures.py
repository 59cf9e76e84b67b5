"""Figures: the library every figure is drawn with (one- and two-column widths, PNG and PDF, method colours,
intervals as error bars), and the report's figures of evaluated models."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from distill.evaluation import results as R
from distill.evaluation.results import TaskResult, number
from distill.reporting.columns import Column, collect_columns, suite_order

log = logging.getLogger(__name__)

#
# Each figure shows a number the tables show, with its 95% interval as an error bar and the sample size it rests on,
# one point per model named by its method. Each is written at one-column width (3.4 in) and at two-column width
# (7 in, `_wide`), as PNG (300 dpi) and PDF (vector), for a paper's single and double columns.

FIGURE_WIDTHS = {"": 3.4, "_wide": 7.0}
"""Suffix -> width in inches: a one-column and a two-column figure of ACL/NeurIPS-style layouts."""
TEACHER_COLOR = "#444444"
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#999933")
"""Okabe-Ito, then two of Tol's muted colours (no yellow, which fades on white): told apart in colour-blind vision."""


def _colors(columns: list[Column]) -> dict[str, str]:
    out, k = {}, 0
    for c in columns:
        if c.role == "teacher":
            out[c.label] = TEACHER_COLOR
        else:
            out[c.label] = PALETTE[k % len(PALETTE)]
            k += 1
    return out


def _task(col: Column, where: tuple[str, str]) -> TaskResult | None:
    res = col.results.get(where[0])
    return res.task(where[1]) if res is not None else None


def _task_result(col: Column, suite: str, task: str) -> dict | None:
    t = _task(col, (suite, task))
    return t.result if t is not None else None


def save_figure(draw, out_dir: Path, stem: str, height: float) -> Path:
    """Draw with `draw(fig, width)` at each of `FIGURE_WIDTHS`; write PNG and PDF; return the one-column PNG."""
    import matplotlib
    from matplotlib.figure import Figure

    style = {
        "font.size": 7.5,
        "axes.titlesize": 8,
        "figure.titlesize": 8,
        "axes.labelsize": 7.5,
        "legend.fontsize": 7,
        "pdf.fonttype": 42,
    }
    for suffix, width in FIGURE_WIDTHS.items():
        with matplotlib.rc_context(style):
            fig = Figure(figsize=(width, height), layout="constrained")
            draw(fig, width)
            for ext in ("png", "pdf"):
                fig.savefig(out_dir / f"{stem}{suffix}.{ext}", dpi=300)
    return out_dir / f"{stem}.png"


def left_title(fig, text: str) -> None:
    """The figure's title, flush left (two lines fit a one-column figure)."""
    fig.suptitle(text, x=0.01, ha="left")


def point(ax, x: float, y: float, ci, color: str, marker: str = "o", ms: float = 5, **kw) -> None:
    """A dot at (x, y) with a horizontal bar over its interval `ci` [low, high] (none drawn when None)."""
    err = None if ci is None else [[x - ci[0]], [ci[1] - x]]
    ax.errorbar([x], [y], xerr=err, fmt=marker, color=color, ms=ms, capsize=2.5, **kw)


def _interval_rows(columns, where, key: str, ci_key: str) -> list[tuple[Column, float, list[float] | None]]:
    rows = []
    for c in columns:
        v = _summary_value(c, where, key)
        if v is None:
            continue
        ci = _task(c, where).summary.get(ci_key)
        ok = isinstance(ci, list) and len(ci) == 2 and all(number(x) is not None for x in ci)
        rows.append((c, v, [float(ci[0]), float(ci[1])] if ok else None))
    return rows


def _dot_interval(ax, rows, colors, labels: list[str]) -> None:
    """One row per model: a dot at the value and a bar over its interval (none drawn where there is none)."""
    y = np.arange(len(rows))
    for yy, (c, v, ci) in zip(y, rows):
        teacher = c.role == "teacher"
        point(ax, v, yy, ci, colors[c.label], "*" if teacher else "o", 7 if teacher else 5, elinewidth=1.2)
    ax.set_yticks(y, labels)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)


def plot_pronoun_gap(columns: list[Column], out_dir: Path, colors: dict[str, str]) -> Path | None:
    """Pronoun probe mean |gap| per model with its 95% interval over prompts; n prompts in the caption."""
    where = _pick(columns, "pronoun_gap")
    if where is None:
        return None
    rows = _interval_rows(columns, where, "pronoun_gap", "pronoun_gap_ci")
    n = {_task(c, where).summary.get("n_prompts") for c, _, _ in rows} - {None}
    r0 = _task_result(rows[0][0], *where) or {}
    n_prof, n_tmpl = len(r0.get("per_profession") or {}), len(r0.get("per_template") or {})
    size = (
        f"n = {n.pop()} prompts ({n_prof} professions x {n_tmpl} template{'s' if n_tmpl != 1 else ''})"
        if len(n) == 1
        else "n varies"
    )

    def draw(fig, width):
        ax = fig.subplots()
        _dot_interval(ax, rows, colors, [c.label for c, _, _ in rows])
        ax.set_xlim(left=0)
        ax.set_xlabel("mean |log P(he) - log P(she)| (nats; 0 = none)")
        left_title(fig, f"Pronoun probe gap, 95% CI over prompts\n{size}")

    return save_figure(draw, out_dir, "pronoun_gap", 0.4 * len(rows) + 1.2)


def plot_female_share(columns: list[Column], out_dir: Path, colors: dict[str, str]) -> Path | None:
    """Female share of the gendered continuations per model with its 95% interval; n gendered per model."""
    where = _pick(columns, "female_share")
    if where is None:
        return None
    rows = _interval_rows(columns, where, "female_share", "female_share_ci")
    labels = []
    for c, _, _ in rows:
        s = _task(c, where).summary
        labels.append(f"{c.label}\n(n = {s.get('n_gendered')} of {s.get('n_texts')})")

    def draw(fig, width):
        ax = fig.subplots()
        _dot_interval(ax, rows, colors, labels)
        ax.axvline(0.5, color="black", linestyle="--", linewidth=0.8)
        ax.set_xlim(0, 1)
        ax.set_xlabel("female share (0.5 = balanced)")
        left_title(fig, "Female share of gendered continuations, 95% CI\nn = gendered of all continuations")

    return save_figure(draw, out_dir, "female_share", 0.5 * len(rows) + 1.1)


def plot_tradeoff(columns: list[Column], out_dir: Path, colors: dict[str, str]) -> Path | None:
    """Pronoun probe mean |gap| (95% interval as a vertical bar) against perplexity, one point per model."""
    x_at, where = _pick(columns, "ppl"), _pick(columns, "pronoun_gap")
    if x_at is None or where is None:
        return None
    rows = [
        (c, v, ci, _summary_value(c, x_at, "ppl"))
        for c, v, ci in _interval_rows(columns, where, "pronoun_gap", "pronoun_gap_ci")
    ]
    rows = [r for r in rows if r[3] is not None and r[3] > 0]
    if not rows:
        return None
    xs = [r[3] for r in rows]
    log_x = max(xs) / min(xs) > 20  # a student far above its teacher would squash the rest on a linear axis
    tokens = {_summary_value(c, x_at, "tokens") for c, *_ in rows} - {None}
    n_tok = f" ({int(next(iter(tokens))):,} tokens)" if len(tokens) == 1 else ""

    def draw(fig, width):
        ax = fig.subplots()
        for c, v, ci, x in rows:
            err = None if ci is None else [[v - ci[0]], [ci[1] - v]]
            teacher = c.role == "teacher"
            ax.errorbar(
                [x],
                [v],
                yerr=err,
                fmt="*" if teacher else "o",
                ms=8 if teacher else 5,
                color=colors[c.label],
                capsize=2.5,
                label=c.label,
            )
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(
            f"perplexity, held-out blocks{n_tok}\n(lower is better{', log scale' if log_x else ''})"
        )
        ax.set_ylabel("pronoun probe mean |gap| (nats)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.margins(x=0.15)
        ax.legend(loc="best", framealpha=0.9)
        left_title(fig, "Pronoun probe gap (95% CI over prompts)\nvs perplexity: lower-left is better")

    return save_figure(draw, out_dir, "gap_vs_perplexity", 2.8)


def plot_professions(columns: list[Column], out_dir: Path, colors: dict[str, str]) -> Path | None:
    """Per profession, each student's mean log P(he) - log P(she) against the teacher's: how much of the teacher's
    profession-specific skew a student keeps (on the diagonal: all of it; on 0: none)."""
    where = _pick(columns, "pronoun_gap")
    teacher = next((c for c in columns if c.role == "teacher"), None)
    if where is None or teacher is None:
        return None
    t = (_task_result(teacher, *where) or {}).get("per_profession") or {}
    students = [
        (c, (_task_result(c, *where) or {}).get("per_profession") or {})
        for c in columns
        if c.role != "teacher"
    ]
    students = [(c, r) for c, r in students if r]
    if not t or not students:
        return None
    r0 = _task_result(teacher, *where) or {}
    n_tmpl = len(r0.get("per_template") or {})

    def draw(fig, width):
        ax = fig.subplots()
        lim = max(abs(v) for _, r in [(teacher, t)] + students for v in r.values() if number(v) is not None)
        lim = 1.05 * lim
        ax.plot([-lim, lim], [-lim, lim], color="gray", linewidth=0.8, linestyle="--")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.axvline(0, color="black", linewidth=0.6)
        for j, (c, r) in enumerate(students):
            pts = [(t[p], r[p]) for p in r if number(t.get(p)) is not None and number(r[p]) is not None]
            ax.scatter(
                [a for a, _ in pts],
                [b for _, b in pts],
                s=10,
                marker="os^vD"[j % 5],
                color=colors[c.label],
                alpha=0.8,
                label=f"{c.label} (n = {len(pts)})",
            )
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("teacher: log P(he) - log P(she) (nats)")
        ax.set_ylabel("student: log P(he) - log P(she) (nats)")
        ax.legend(loc="best", framealpha=0.9)
        left_title(
            fig, f"Pronoun probe per profession, mean over {n_tmpl} template{'s' if n_tmpl != 1 else ''}"
        )

    return save_figure(draw, out_dir, "professions", 3.2)


def _pick(columns: list[Column], key: str) -> tuple[str, str] | None:
    """The (suite, task) whose summary has `key` for the most models (earlier suites win ties)."""
    counts: dict[tuple[str, str], int] = {}
    order: list[tuple[str, str]] = []
    for c in columns:
        for suite in suite_order(set(c.results)):
            for task, t in c.results[suite].tasks.items():
                if c.results[suite].summary(task) is not None and t.value(key) is not None:
                    if (suite, task) not in counts:
                        order.append((suite, task))
                    counts[(suite, task)] = counts.get((suite, task), 0) + 1
    if not counts:
        return None
    return max(order, key=lambda st: (counts[st], -order.index(st)))


def _summary_value(col: Column, where: tuple[str, str], key: str) -> float | None:
    t = _task(col, where)
    return t.value(key) if t is not None else None


FIGURES = (
    ("pronoun_gap", "Pronoun probe mean |gap| per model, 95% CI over prompts", plot_pronoun_gap),
    ("female_share", "Female share of gendered continuations per model, 95% CI", plot_female_share),
    ("gap_vs_perplexity", "Pronoun probe gap vs perplexity", plot_tradeoff),
    ("professions", "Per-profession probe: each student against its teacher", plot_professions),
)


def draw_figures(columns: list[Column], out_dir: Path) -> list[tuple[str, Path]]:
    """Every figure that the columns' results allow, into `out_dir`; returns (caption, one-column PNG)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = _colors(columns)
    out = []
    for _, caption, draw in FIGURES:
        png = draw(columns, out_dir, colors)
        if png is not None:
            out.append((caption, png))
    return out


def run_figures(run_dir: str | Path, suite: str) -> list[Path]:
    """The figures of one run's teacher and student (`<run>/eval/figures/`), for the run's W&B run."""
    columns = collect_columns([run_dir])
    for c in columns:
        c.results = {k: v for k, v in c.results.items() if k == suite}
    columns = [c for c in columns if c.results]
    return [png for _, png in draw_figures(columns, R.figures_dir(run_dir))] if columns else []
