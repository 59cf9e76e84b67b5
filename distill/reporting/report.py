"""Side-by-side report of evaluated runs: `report.md` with tables and PNG plots, also logged to W&B.

    write_report(["runs/smollm2-135m_to_6L_baseline", "runs/smollm2-135m_to_6L"], out="report")

For each run it reads `<run>/eval/<suite>.json` (the student, written by `reporting.evaluate.evaluate_checkpoint`) and
`<run>/eval/teacher/<suite>.json` (the teacher, written by `reporting.evaluate.evaluate_run`). A folder holding `<suite>.json`
files directly (e.g. `runs/eval/<model>`) is read as one model. Columns are each distinct teacher once, then
each run's student, in the order given, named by its method (`run.label`, e.g. "plain KD", "CDA + mean"). Figures
are drawn with matplotlib's object API (no pyplot, so no global backend state), each with the tables' own numbers,
their 95% intervals and the sample sizes, at one- and two-column widths, as PNG and PDF.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.core.errors import DataError
from distill.evaluation import results as R
from distill.evaluation.registry import Row, all_hidden, all_rows, kinds
from distill.evaluation.results import SuiteResult, TaskResult, number

log = logging.getLogger(__name__)

NOT_EVALUATED = "-"
UNDEFINED = "n/a"
# Suites listed first in reports; the rest follow alphabetically.
SUITE_ORDER = ("quick", "templates", "bold_professions", "bold_gender", "pronoun_probe", "perplexity")


@dataclass
class Column:
    """One model in the report: a teacher or a run's student, with its results per suite."""

    label: str
    """The column header: the method's name for a run's student ("CDA + mean"), "teacher" for a teacher."""
    role: str
    source: Path
    """The folder its results were read from."""
    results: dict[str, SuiteResult] = field(default_factory=dict)
    """Suite name -> its `<suite>.json`."""
    name: str = ""
    """The run folder or model name (the models table shows it next to the label)."""


def _run_label(run_dir: Path, model: dict, fallback: str) -> str:
    """The method's name of a run's student: as evaluated (`model.method`), else from the run's config.yaml."""
    if model.get("method"):
        return str(model["method"])
    if R.run_config_file(run_dir).is_file():
        from distill.core.config import load_config, method_label

        try:
            return method_label(load_config(R.run_config_file(run_dir)))
        except Exception:  # a run from an older version whose config no longer loads: its folder name will do
            return fallback
    return fallback


# --------------------------------------------------------------------------------------------------------------
# Reading results


def collect_columns(runs: list[str | Path]) -> list[Column]:
    """Columns for `runs`: each distinct teacher once (from the first run that has it), then each student."""
    teachers: dict[str, Column] = {}
    others: list[Column] = []
    for r in runs:
        p = Path(r)
        if not p.is_dir():
            raise DataError(f"{r}: not a directory; pass run directories (runs/<name>) that were evaluated")
        eval_dir = R.eval_dir(p) if R.eval_dir(p).is_dir() else p
        own = R.read_folder(eval_dir)
        teacher_dir = eval_dir / R.TEACHER_DIR
        teacher = R.read_folder(teacher_dir) if teacher_dir.is_dir() else {}
        if not own and not teacher:
            raise DataError(
                f"{r}: no evaluation results (expected {eval_dir}/<suite>.json); run `make eval CKPT={r}` "
                f"(or `distill eval {r} --suite quick`) first"
            )
        if teacher:
            first = next(iter(teacher.values())).model
            key = str(first.get("checkpoint") or first.get("label"))
            if key not in teachers:
                teachers[key] = Column("teacher", "teacher", teacher_dir, name=key)
            for suite, payload in teacher.items():
                teachers[key].results.setdefault(suite, payload)
        if own:
            model = next(iter(own.values())).model
            name = p.resolve().name if p.resolve().name != R.EVAL_DIR else p.resolve().parent.name
            role = str(model.get("role") or "model")
            if (
                role == "teacher"
            ):  # a teacher evaluated on its own (distill eval <teacher>) joins the teachers
                key = str(model.get("checkpoint") or name)
                col = teachers.setdefault(key, Column("teacher", "teacher", eval_dir, name=key))
                for suite, payload in own.items():
                    col.results.setdefault(suite, payload)
                continue
            run_dir = eval_dir.parent if eval_dir.name == R.EVAL_DIR else eval_dir
            label = _run_label(run_dir, model, name) if role == "student" else name
            others.append(Column(label, role, eval_dir, own, name=name))
    if len(teachers) > 1:  # several teachers: say which is which
        for c in teachers.values():
            c.label = f"teacher ({c.name})"
    columns = list(teachers.values()) + others
    seen: dict[str, int] = {}
    labels = [c.label for c in columns]
    for c in columns:  # two runs of one method (seeds, budgets) are told apart by their folder names
        if labels.count(c.label) > 1 and c.role != "teacher":
            c.label = f"{c.label} ({c.name})"
        seen[c.label] = seen.get(c.label, 0) + 1
        if seen[c.label] > 1:
            c.label = f"{c.label} ({seen[c.label]})"
    return columns


def _suite_order(names: set[str]) -> list[str]:
    first = [s for s in SUITE_ORDER if s in names]
    return first + sorted(names - set(first))


# --------------------------------------------------------------------------------------------------------------
# Tables


def fmt(v: Any) -> str:
    """A number for a table: 3 significant digits (1 decimal from 100 up); undefined -> `n/a`."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    x = number(v)
    if x is None:
        return UNDEFINED
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.3g}"


def _cell(summary: dict | None, row: Row) -> str:
    if summary is None:
        return NOT_EVALUATED
    if row.of is not None:
        return f"{fmt(summary.get(row.key))} / {fmt(summary.get(row.of))}"
    text = fmt(summary.get(row.key))
    ci = summary.get(row.ci) if row.ci else None
    if isinstance(ci, list) and len(ci) == 2 and number(summary.get(row.key)) is not None:
        text += f" [{fmt(ci[0])}, {fmt(ci[1])}]"
    return text


def _task_rows(metrics: list[str], summaries: list[dict | None]) -> list[tuple[Row, str]]:
    """(row, its label) for every headline key one of `summaries` has: the rows of the task's kinds in their
    order, then keys of other kinds, then keys no kind names (numbers a newer runner added), under their key."""
    rows: dict[str, tuple[Row, Any]] = {}
    for m in metrics:
        for r in kinds()[m].rows if m in kinds() else ():
            rows.setdefault(r.key, (r, kinds()[m]))
    known, hidden = all_rows(), all_hidden()
    present = [k for s in summaries if s for k in s]
    shown = set(rows)
    out = [
        (r, k.row_text(r, summaries))
        for key, (r, k) in rows.items()
        if any(s and key in s for s in summaries)
    ]
    for key in dict.fromkeys(present):
        if key in shown:
            continue
        if key in known:
            out.append((known[key], known[key].label))
        elif key not in hidden:
            out.append((Row(key, key), key))
    return out


def suite_rows(columns: list[tuple[str, SuiteResult | dict | None]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table for one suite; `columns` are (label, that suite's results or None)."""
    results = [(label, SuiteResult.of(p) if p else None) for label, p in columns]
    tasks: list[str] = []
    for _, res in results:
        for t in res.tasks if res else {}:
            if t not in tasks and res.summary(t) is not None:
                tasks.append(t)
    header = ["task: metric", "ideal"] + [label for label, _ in results]
    rows: list[list[str]] = []
    for task in tasks:
        summaries = [res.summary(task) if res else None for _, res in results]
        metrics = [res.tasks[task].metric for _, res in results if res and task in res.tasks]
        for row, label in _task_rows([m for m in dict.fromkeys(metrics) if m], summaries):
            rows.append([f"{task}: {label}", row.ideal] + [_cell(s, row) for s in summaries])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table (pipes in cells escaped)."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|"] + [line(r) for r in rows])


def suite_table(columns: list[tuple[str, dict | None]]) -> str:
    """Markdown table of one suite with the models side by side; `columns` are (label, `<suite>.json` payload)."""
    header, rows = suite_rows(columns)
    return markdown_table(header, rows)


# --------------------------------------------------------------------------------------------------------------
# Figures
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
        for suite in _suite_order(set(c.results)):
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


# --------------------------------------------------------------------------------------------------------------
# The report


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _count(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return ""
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _shown_path(p: str | Path) -> str:
    """A path as the report shows it: relative to the working folder when it lies below it, else as given (so a
    report reads the same whether the runs were named absolutely or relatively)."""
    text = str(p)
    if text.startswith("embedded:") or not Path(text).exists():
        return text
    try:
        return Path(text).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return Path(text).resolve().as_posix()


def _model_table(columns: list[Column]) -> str:
    rows = []
    for c in columns:
        first = next(iter(c.results.values()), None)
        model = first.model if first is not None else {}
        params = model.get("n_params")
        rows.append(
            [
                c.label,
                c.role,
                f"`{_shown_path(model.get('checkpoint', ''))}`",
                str(model.get("n_layers", "")),
                _count(params),
                ", ".join(_suite_order(set(c.results))),
                f"`{_shown_path(c.source)}`",
            ]
        )
    return markdown_table(["column", "role", "checkpoint", "layers", "parameters", "suites", "results"], rows)


def _perplexity_sources(columns: list[Column], suite: str) -> list[str]:
    notes = []
    for c in columns:
        res = c.results.get(suite)
        for task, t in (res.tasks if res is not None else {}).items():
            if t.metric == "perplexity":
                r = t.result
                notes.append(f"{c.label}, `{task}`: {r.get('source')} (block size {r.get('block_size')})")
    return notes


def default_report_dir(runs: list[str | Path]) -> Path:
    """`report/` next to the first run (`runs/report` for `runs/a runs/b`): reports live with the runs."""
    return Path(runs[0]).parent / "report"  # next to the runs, not inside one


def write_report(runs: list[str], out: str | Path | None = None, log_wandb: bool | None = None) -> Path:
    """Write `<out>/report.md` and its figures for the evaluated `runs`; returns the path of report.md. `out`
    defaults to `default_report_dir(runs)`.

    `log_wandb`: also log the tables and figures to Weights & Biases as one run named after the compared methods
    and tagged with their run names (offline unless WANDB_API_KEY is set, files under `<out>/wandb`); None logs
    unless `WANDB_MODE=disabled`. A W&B failure is logged, never fatal.
    """
    if not runs:
        raise DataError('no runs given; pass run directories, e.g. make report RUNS="runs/a runs/b"')
    columns = collect_columns(list(runs))
    out_dir = Path(out) if out is not None else default_report_dir(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    suites = _suite_order({s for c in columns for s in c.results})
    labels = [c.label for c in columns]

    lines = [
        "# Evaluation report",
        "",
        f"Generated {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} from "
        + ", ".join(f"`{_shown_path(r)}`" for r in runs)
        + ". Every metric is defined in `eval/README.md`; `n/a` is undefined (e.g. no gendered text), "
        "`-` not evaluated. Intervals are 95% percentile bootstraps.",
        "",
        "## Models",
        "",
        _model_table(columns),
        "",
    ]
    tables: dict[str, tuple[list[str], list[list[str]]]] = {}
    for suite in suites:
        payloads = [(c.label, c.results.get(suite)) for c in columns]
        header, rows = suite_rows(payloads)
        tables[suite] = (header, rows)
        description = next((p.description for _, p in payloads if p and p.description), "")
        lines += [f"## Suite `{suite}`", ""]
        if description:
            lines += [f"> {description}", ""]
        lines += [markdown_table(header, rows), ""]
        sources = _perplexity_sources(columns, suite)
        if len({s.split(": ", 1)[1] for s in sources}) > 1:
            lines += ["Perplexity is measured on different text per column (compare within a run):", ""]
            lines += [f"- {s}" for s in sources] + [""]
    images = draw_figures(columns, out_dir)
    lines += ["## Figures", ""]
    if images:
        lines += [
            "Each figure shows numbers of the tables above with their 95% intervals; `<name>.pdf` is the vector "
            "version and `<name>_wide.{png,pdf}` the two-column width.",
            "",
        ]
        for caption, png in images:
            lines += [f"![{caption}]({png.name})", "", f"*{caption}.*", ""]
    else:
        lines += ["None drawn: the results have no probe, female-share or perplexity numbers.", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    log.info("report: %s (%d models: %s; %d figures)", path, len(columns), ", ".join(labels), len(images))

    if log_wandb is None:
        log_wandb = os.environ.get("WANDB_MODE", "").lower() != "disabled"
    if log_wandb:
        _log_to_wandb(out_dir, tables, images, columns)
    return path


def _log_to_wandb(
    out_dir: Path,
    tables: dict[str, tuple[list[str], list[list[str]]]],
    images: list[tuple[str, Path]],
    columns: list[Column],
) -> None:
    """Log the tables and figures as one W&B run (job_type `report`) named after the compared models ("report:
    CDA + mean vs plain KD") and tagged with their run names; its config lists each run's folder and W&B run id.
    Offline unless a key is set."""
    try:
        import wandb

        from distill.core.tracking import wandb_mode, wandb_run_id

        students = [c for c in columns if c.role != "teacher"]
        runs = {}
        for c in students:
            run_dir = c.source.parent if c.source.name == R.EVAL_DIR else c.source
            runs[c.label] = {"run": _shown_path(run_dir), "wandb_id": wandb_run_id(run_dir, create=False)}
        name = "report: " + " vs ".join(c.label for c in students) if students else "report"
        tags = ["report"] + [c.name[:64] for c in students if c.name]
        run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "fairdistill"),
            job_type="report",
            reinit="finish_previous",
            name=name,
            tags=tags,
            mode=os.environ.get("WANDB_MODE") or wandb_mode("auto"),
            dir=str(out_dir),
            config={"runs": runs},
        )
        payload: dict[str, Any] = {}
        for suite, (header, rows) in tables.items():
            payload[f"report/{suite}"] = wandb.Table(columns=header, data=rows)
        for caption, png in images:
            payload[f"report/{png.stem}"] = wandb.Image(str(png), caption=caption)
        run.log(payload)
        run.finish()
    except Exception as e:  # W&B is a mirror of report.md: its failure must not lose the report
        log.warning("report: W&B logging failed (%s: %s); report.md is complete", type(e).__name__, e)
