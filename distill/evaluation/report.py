"""Side-by-side report of evaluated runs: `report.md` with tables and PNG plots, also logged to W&B.

    write_report(["runs/smollm2-135m_to_6L_baseline", "runs/smollm2-135m_to_6L"], out="report")

For each run it reads `<run>/eval/<suite>.json` (the student, written by `runner.evaluate_checkpoint`) and
`<run>/eval/teacher/<suite>.json` (the teacher, written by `runner.evaluate_run`). A folder holding `<suite>.json`
files directly (e.g. `runs/eval/<model>`) is read as one model. Columns are each distinct teacher once, then
each run's student, in the order given. Plots are drawn with matplotlib's object API on the Agg canvas (no
pyplot, so no global backend state): per-group parity bars, the pronoun probe gap per profession, and
disparity vs perplexity.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import DataError
from distill.evaluation.stereotype import STEREOTYPE_CI_KEYS, STEREOTYPE_ROWS

log = logging.getLogger(__name__)

# Headline keys shown in tables, in this order: (key, row label, ideal value). The runner's `headline` makes them.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("parity_mean", "parity min(F/M, M/F), mean over groups", "1"),
    ("parity_min", "parity, worst group", "1"),
    ("female_share", "female share of gendered texts [95% CI]", "0.5"),
    ("n_gendered", "gendered / all continuations", ""),
    ("n_groups_undefined", "groups with no gendered text (parity n/a)", "0"),
    ("sentiment_gap", "sentiment gap A - B, VADER compound [95% CI]", "0"),
    ("sentiment_a", "mean sentiment, A", ""),
    ("sentiment_b", "mean sentiment, B", ""),
    ("pronoun_gap", "pronoun probe mean |log P(he) - log P(she)| (nats)", "0"),
    ("he_minus_she", "pronoun probe mean log P(he) - log P(she) (nats)", "0"),
    ("ppl", "perplexity", "lower"),
    ("fluency_ppl", "fluency: perplexity of continuations under the reference", "lower"),
    ("crows_score", "CrowS-Pairs: % pairs preferring the stereotype [95% CI]", "50"),
    ("ss", "StereoSet SS (%)", "50"),
    ("lms", "StereoSet LMS (%)", "100"),
    ("icat", "StereoSet ICAT", "100"),
    ("tpr_gap_rms", "Bias-in-Bios TPR gap (female - male), RMS over occupations", "0"),
    ("accuracy", "Bias-in-Bios occupation probe accuracy", "higher"),
    *STEREOTYPE_ROWS,
)
CI_KEYS = {
    "female_share": "female_share_ci",
    "sentiment_gap": "sentiment_gap_ci",
    "crows_score": "crows_score_ci",
    **STEREOTYPE_CI_KEYS,
}
NOT_EVALUATED = "-"
UNDEFINED = "n/a"
# Suites listed first in reports; the rest follow alphabetically.
SUITE_ORDER = ("quick", "templates", "bold_professions", "bold_gender", "pronoun_probe", "perplexity")


@dataclass
class Column:
    """One model in the report: a teacher or a run's student, with its results per suite."""

    label: str
    role: str
    source: Path
    """The folder its results were read from."""
    results: dict[str, dict] = field(default_factory=dict)
    """Suite name -> the payload of `<suite>.json`."""


# --------------------------------------------------------------------------------------------------------------
# Reading results


def _read_results(folder: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for f in sorted(folder.glob("*.json")):
        try:
            payload = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{f}: not valid JSON ({e}); re-run the evaluation that wrote it") from None
        if isinstance(payload, dict) and "suite" in payload and "summary" in payload:  # skip other JSON files
            out[str(payload["suite"])] = payload
    return out


def collect_columns(runs: list[str | Path]) -> list[Column]:
    """Columns for `runs`: each distinct teacher once (from the first run that has it), then each student."""
    teachers: dict[str, Column] = {}
    others: list[Column] = []
    for r in runs:
        p = Path(r)
        if not p.is_dir():
            raise DataError(f"{r}: not a directory; pass run directories (runs/<name>) that were evaluated")
        eval_dir = p / "eval" if (p / "eval").is_dir() else p
        own = _read_results(eval_dir)
        teacher = _read_results(eval_dir / "teacher") if (eval_dir / "teacher").is_dir() else {}
        if not own and not teacher:
            raise DataError(
                f"{r}: no evaluation results (expected {eval_dir}/<suite>.json); run `make eval CKPT={r}` "
                f"(or `distill eval {r} --suite quick`) first"
            )
        if teacher:
            first = next(iter(teacher.values()))["model"]
            key = str(first.get("checkpoint") or first.get("label"))
            if key not in teachers:
                teachers[key] = Column(f"teacher ({key})", "teacher", eval_dir / "teacher")
            for suite, payload in teacher.items():
                teachers[key].results.setdefault(suite, payload)
        if own:
            model = next(iter(own.values()))["model"]
            name = p.resolve().name if p.resolve().name != "eval" else p.resolve().parent.name
            role = str(model.get("role") or "model")
            if (
                role == "teacher"
            ):  # a teacher evaluated on its own (distill eval <teacher>) joins the teachers
                key = str(model.get("checkpoint") or name)
                col = teachers.setdefault(key, Column(f"teacher ({key})", "teacher", eval_dir))
                for suite, payload in own.items():
                    col.results.setdefault(suite, payload)
                continue
            others.append(Column(name, role, eval_dir, own))
    columns = list(teachers.values()) + others
    seen: dict[str, int] = {}
    for c in columns:  # two runs with the same folder name must still get distinct headers
        seen[c.label] = seen.get(c.label, 0) + 1
        if seen[c.label] > 1:
            c.label = f"{c.label} ({seen[c.label]})"
    return columns


def _suite_order(names: set[str]) -> list[str]:
    first = [s for s in SUITE_ORDER if s in names]
    return first + sorted(names - set(first))


# --------------------------------------------------------------------------------------------------------------
# Tables


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def fmt(v: Any) -> str:
    """A number for a table: 3 significant digits (1 decimal from 100 up); undefined -> `n/a`."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    x = _num(v)
    if x is None:
        return UNDEFINED
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.3g}"


def _cell(summary: dict | None, key: str) -> str:
    if summary is None:
        return NOT_EVALUATED
    if key == "n_gendered":
        return f"{fmt(summary.get('n_gendered'))} / {fmt(summary.get('n_texts'))}"
    text = fmt(summary.get(key))
    ci = summary.get(CI_KEYS.get(key, ""), None)
    if isinstance(ci, list) and len(ci) == 2 and _num(summary.get(key)) is not None:
        text += f" [{fmt(ci[0])}, {fmt(ci[1])}]"
    return text


def _row_label(key: str, label: str, summaries: list[dict | None]) -> str:
    if key in ("sentiment_a", "sentiment_b", "sentiment_gap"):
        for s in summaries:
            if s and isinstance(s.get("groups_compared"), list) and len(s["groups_compared"]) == 2:
                a, b = s["groups_compared"]
                return label.replace("A - B", f"{a} - {b}").replace(", A", f", {a}").replace(", B", f", {b}")
    return label


def suite_rows(columns: list[tuple[str, dict | None]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table for one suite; `columns` are (label, that suite's payload or None)."""
    tasks: list[str] = []
    for _, payload in columns:
        for t in (payload or {}).get("summary", {}):
            if t not in tasks:
                tasks.append(t)
    header = ["task: metric", "ideal"] + [label for label, _ in columns]
    rows: list[list[str]] = []
    known = {k for k, _, _ in ROWS}
    for task in tasks:
        summaries = [(p or {}).get("summary", {}).get(task) if p else None for _, p in columns]
        keys = [(k, lab, ideal) for k, lab, ideal in ROWS if any(s and k in s for s in summaries)]
        if task_keys := [k for s in summaries if s for k in s if k not in known and k not in _HIDDEN]:
            keys += [(k, k, "") for k in dict.fromkeys(task_keys)]  # numbers a newer runner added
        for key, label, ideal in keys:
            cells = [_cell(s, key) for s in summaries]
            rows.append([f"{task}: {_row_label(key, label, summaries)}", ideal] + cells)
    return header, rows


# Summary keys that are shown inside another cell (intervals, counts) or are not numbers.
_HIDDEN = {
    "female_share_ci",
    "sentiment_gap_ci",
    "crows_score_ci",
    "n_texts",
    "groups_compared",
    "tokens",
    "n",
    *STEREOTYPE_CI_KEYS.values(),
}


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
# Plots


def _colors(columns: list[Column]) -> dict[str, str]:
    palette = [
        "#1f77b4",
        "#d62728",
        "#2ca02c",
        "#9467bd",
        "#ff7f0e",
        "#8c564b",
        "#e377c2",
        "#17becf",
        "#bcbd22",
    ]
    out, k = {}, 0
    for c in columns:
        if c.role == "teacher":
            out[c.label] = "#555555" if not any(v == "#555555" for v in out.values()) else "#999999"
        else:
            out[c.label] = palette[k % len(palette)]
            k += 1
    return out


def _task_result(col: Column, suite: str, task: str) -> dict | None:
    t = col.results.get(suite, {}).get("tasks", {}).get(task)
    return t.get("result") if isinstance(t, dict) else None


def _short_group(name: str) -> str:
    for suffix in ("_occupations", "_specialties", "_types", "_branches", "_personnel", "_titles"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name.replace("_", " ")


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_parity(
    columns: list[Column], suite: str, task: str, path: Path, colors: dict[str, str]
) -> Path | None:
    """Grouped bars: one group of bars per prompt group, one bar per model; undefined parity marked `x`."""
    from matplotlib.lines import Line2D

    data = [(c, _task_result(c, suite, task)) for c in columns]
    data = [(c, r) for c, r in data if r and isinstance(r.get("groups"), dict)]
    if not data:
        return None
    groups: list[str] = []
    for _, r in data:
        groups += [g for g in r["groups"] if g not in groups]
    n_models = len(data)
    fig = _new_figure(max(9.0, 0.5 * len(groups) * max(1.0, n_models / 2)), 5.5)
    ax = fig.subplots()
    x = np.arange(len(groups))
    width = 0.8 / n_models
    for j, (col, r) in enumerate(data):
        values = [_num(r["groups"].get(g, {}).get("parity")) for g in groups]
        pos = x - 0.4 + width * (j + 0.5)
        mean = fmt(r.get("parity_mean"))
        ax.bar(
            pos,
            [v or 0.0 for v in values],
            width,
            color=colors[col.label],
            label=f"{col.label} (mean {mean})",
        )
        for p, v, g in zip(pos, values, groups):
            if v is None and g in r["groups"]:
                ax.plot([p], [0.03], marker="x", color=colors[col.label], markersize=7, markeredgewidth=2)
            elif v == 0.0:  # a zero-height bar is invisible; say it is a measured 0, not a missing value
                ax.text(p, 0.01, "0", ha="center", va="bottom", fontsize=7, color=colors[col.label])
    per_group = [r["groups"][g].get("n") for _, r in data[:1] for g in groups if g in r["groups"]]
    n_text = f", {per_group[0]} continuations per group" if per_group and len(set(per_group)) == 1 else ""
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=0.8)
    ax.set_ylim(0, 1.12)
    ax.set_xticks(x, [_short_group(g) for g in groups], rotation=40, ha="right")
    ax.set_xlabel("prompt group")
    ax.set_ylabel("parity = min(F/M, M/F)   (1 = balanced, 0 = one gender only)")
    ax.set_title(f"Gender parity of generated continuations per group ({suite} / {task}{n_text})")
    handles, _ = ax.get_legend_handles_labels()
    handles.append(
        Line2D([], [], marker="x", linestyle="", color="black", label="x = no gendered text (undefined)")
    )
    ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=110)
    return path


def plot_probe(
    columns: list[Column], suite: str, task: str, path: Path, colors: dict[str, str]
) -> Path | None:
    """Dot plot: one row per profession (sorted by the first model's gap), one marker per model."""
    data = [(c, _task_result(c, suite, task)) for c in columns]
    data = [
        (c, r) for c, r in data if r and isinstance(r.get("per_profession"), dict) and r["per_profession"]
    ]
    if not data:
        return None
    first = data[0][1]["per_profession"]
    professions = sorted(first, key=lambda p: -(_num(first[p]) or 0.0))
    professions += [p for _, r in data for p in r["per_profession"] if p not in professions]
    n = len(professions)
    fig = _new_figure(8.5, max(4.0, 0.21 * n + 1.8))
    ax = fig.subplots()
    y = np.arange(n)
    markers = ["D", "o", "s", "^", "v", "P", "X", "<", ">"]
    for j, (col, r) in enumerate(data):
        values = [_num(r["per_profession"].get(p)) for p in professions]
        ys = [yy for yy, v in zip(y, values) if v is not None]
        xs = [v for v in values if v is not None]
        ax.scatter(
            xs,
            ys,
            s=22,
            marker=markers[j % len(markers)],
            color=colors[col.label],
            label=f"{col.label} (mean |gap| {fmt(r.get('pronoun_gap'))})",
            zorder=3,
        )
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(y, professions, fontsize=7)
    ax.set_ylim(n - 0.5, -0.5)  # first profession at the top
    n_templates = len(first and data[0][1].get("per_template") or {})
    ax.set_xlabel("log P(he-words) - log P(she-words) for the next token (nats; > 0: expects a man)")
    ax.set_ylabel("profession")
    plural = "s" if n_templates != 1 else ""
    ax.set_title(f"Pronoun probe per profession ({suite} / {task}, mean over {n_templates} template{plural})")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.savefig(path, dpi=110)
    return path


def _pick(columns: list[Column], key: str) -> tuple[str, str] | None:
    """The (suite, task) whose summary has `key` for the most models (earlier suites win ties)."""
    counts: dict[tuple[str, str], int] = {}
    order: list[tuple[str, str]] = []
    for c in columns:
        for suite in _suite_order(set(c.results)):
            for task, summary in c.results[suite].get("summary", {}).items():
                if isinstance(summary, dict) and _num(summary.get(key)) is not None:
                    if (suite, task) not in counts:
                        order.append((suite, task))
                    counts[(suite, task)] = counts.get((suite, task), 0) + 1
    if not counts:
        return None
    return max(order, key=lambda st: (counts[st], -order.index(st)))


def _summary_value(col: Column, where: tuple[str, str], key: str) -> float | None:
    suite, task = where
    return _num(col.results.get(suite, {}).get("summary", {}).get(task, {}).get(key))


def plot_tradeoff(columns: list[Column], path: Path, colors: dict[str, str]) -> Path | None:
    """Disparity (1 - parity mean; and the pronoun probe's mean |gap|) against perplexity, one point per model."""
    x_at = _pick(columns, "ppl")
    panels = [
        (where, key, label)
        for where, key, label in (
            (
                _pick(columns, "parity_mean"),
                "parity_mean",
                "generation disparity: 1 - parity mean (0 = balanced)",
            ),
            (_pick(columns, "pronoun_gap"), "pronoun_gap", "pronoun probe mean |he - she| (nats; 0 = none)"),
        )
        if where is not None
    ]
    if x_at is None or not panels:
        return None
    fig = _new_figure(6.0 * len(panels), 4.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    xs = [x for c in columns if (x := _summary_value(c, x_at, "ppl")) is not None and x > 0]
    # A barely trained student can sit orders of magnitude above the teacher; a linear axis would hide the rest.
    log_x = bool(xs) and max(xs) / min(xs) > 20
    for ax, (where, key, ylabel) in zip(axes, panels):
        for col in columns:
            x = _summary_value(col, x_at, "ppl")
            yv = _summary_value(col, where, key)
            if x is None or yv is None:
                continue
            y = 1.0 - yv if key == "parity_mean" else yv
            teacher = col.role == "teacher"
            ax.scatter(
                [x],
                [y],
                s=160 if teacher else 70,
                marker="*" if teacher else "o",
                color=colors[col.label],
                label=col.label,
                zorder=3,
                edgecolors="black",
                linewidths=0.5,
            )
            ax.annotate(col.label, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=7)
        if log_x:
            ax.set_xscale("log")
        scale = ", log scale" if log_x else ""
        ax.set_xlabel(f"perplexity ({x_at[0]} / {x_at[1]}{scale}; lower is better)")
        ax.set_ylabel(ylabel)
        ax.set_title(
            f"{'disparity' if key == 'parity_mean' else 'pronoun gap'} vs perplexity ({where[0]} / {where[1]})"
        )
        ax.grid(alpha=0.3)
        ax.margins(x=0.25, y=0.25)
    axes[0].legend(loc="best", fontsize=8, framealpha=0.9)
    fig.suptitle("Disparity vs perplexity: lower-left is better (star = teacher)")
    fig.savefig(path, dpi=110)
    return path


# --------------------------------------------------------------------------------------------------------------
# The report


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _count(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return ""
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _model_table(columns: list[Column]) -> str:
    rows = []
    for c in columns:
        any_payload = next(iter(c.results.values()), {})
        model = any_payload.get("model", {})
        params = model.get("n_params")
        rows.append(
            [
                c.label,
                c.role,
                f"`{model.get('checkpoint', '')}`",
                str(model.get("n_layers", "")),
                _count(params),
                ", ".join(_suite_order(set(c.results))),
                f"`{c.source}`",
            ]
        )
    return markdown_table(["column", "role", "checkpoint", "layers", "parameters", "suites", "results"], rows)


def _perplexity_sources(columns: list[Column], suite: str) -> list[str]:
    notes = []
    for c in columns:
        for task, t in c.results.get(suite, {}).get("tasks", {}).items():
            if t.get("metric") == "perplexity":
                r = t.get("result", {})
                notes.append(f"{c.label}, `{task}`: {r.get('source')} (block size {r.get('block_size')})")
    return notes


def write_report(runs: list[str], out: str | Path = "report", log_wandb: bool | None = None) -> Path:
    """Write `<out>/report.md` and its PNG plots for the evaluated `runs`; returns the path of report.md.

    `log_wandb`: also log the tables and plots to Weights & Biases (offline unless WANDB_API_KEY is set, files
    under `<out>/wandb`); None logs unless `WANDB_MODE=disabled`. A W&B failure is logged, never fatal.
    """
    if not runs:
        raise DataError('no runs given; pass run directories, e.g. make report RUNS="runs/a runs/b"')
    columns = collect_columns(list(runs))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = _colors(columns)
    suites = _suite_order({s for c in columns for s in c.results})
    labels = [c.label for c in columns]

    lines = [
        "# Evaluation report",
        "",
        f"Generated {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} from "
        + ", ".join(f"`{r}`" for r in runs)
        + ". Every metric is defined in `eval/README.md`; `n/a` is undefined (e.g. no gendered text), "
        "`-` not evaluated. Intervals are 95% percentile bootstraps.",
        "",
        "## Models",
        "",
        _model_table(columns),
        "",
    ]
    tables: dict[str, tuple[list[str], list[list[str]]]] = {}
    images: list[tuple[str, Path]] = []
    for suite in suites:
        payloads = [(c.label, c.results.get(suite)) for c in columns]
        header, rows = suite_rows(payloads)
        tables[suite] = (header, rows)
        description = next((p.get("description") for _, p in payloads if p and p.get("description")), "")
        lines += [f"## Suite `{suite}`", ""]
        if description:
            lines += [f"> {description}", ""]
        lines += [markdown_table(header, rows), ""]
        sources = _perplexity_sources(columns, suite)
        if len({s.split(": ", 1)[1] for s in sources}) > 1:
            lines += ["Perplexity is measured on different text per column (compare within a run):", ""]
            lines += [f"- {s}" for s in sources] + [""]
        task_kinds: dict[str, str] = {}
        for c in columns:
            for task, t in c.results.get(suite, {}).get("tasks", {}).items():
                task_kinds.setdefault(task, t.get("metric", ""))
        for task, metric in task_kinds.items():
            if metric == "generation_disparity":
                png = plot_parity(
                    columns, suite, task, out_dir / f"parity_{_slug(suite)}_{_slug(task)}.png", colors
                )
                what = "Per-group parity"
            elif metric == "pronoun_probe":
                png = plot_probe(
                    columns, suite, task, out_dir / f"probe_{_slug(suite)}_{_slug(task)}.png", colors
                )
                what = "Pronoun probe gap per profession"
            else:
                continue
            if png is not None:
                images.append((f"{what}: {suite} / {task}", png))
                lines += [f"![{what}: {suite} / {task}]({png.name})", ""]
    tradeoff = plot_tradeoff(columns, out_dir / "disparity_vs_perplexity.png", colors)
    lines += ["## Disparity vs perplexity", ""]
    if tradeoff is not None:
        images.append(("Disparity vs perplexity", tradeoff))
        lines += [f"![Disparity vs perplexity]({tradeoff.name})", ""]
    else:
        lines += [
            "Not drawn: it needs a perplexity and a disparity or pronoun-probe number for the models.",
            "",
        ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    log.info("report: %s (%d models: %s; %d plots)", path, len(columns), ", ".join(labels), len(images))

    if log_wandb is None:
        log_wandb = os.environ.get("WANDB_MODE", "").lower() != "disabled"
    if log_wandb:
        _log_to_wandb(out_dir, tables, images, [str(r) for r in runs])
    return path


def _log_to_wandb(
    out_dir: Path,
    tables: dict[str, tuple[list[str], list[list[str]]]],
    images: list[tuple[str, Path]],
    runs: list[str],
) -> None:
    """Log the tables and plots as one W&B run (job_type `report`); offline unless a key is set."""
    try:
        import wandb

        from distill.tracking import wandb_mode

        run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "fairdistill"),
            job_type="report",
            mode=os.environ.get("WANDB_MODE") or wandb_mode("auto"),
            dir=str(out_dir),
            config={"runs": runs},
        )
        payload: dict[str, Any] = {}
        for suite, (header, rows) in tables.items():
            payload[f"report/{suite}"] = wandb.Table(columns=header, data=rows)
        for title, png in images:
            payload[f"report/{png.stem}"] = wandb.Image(str(png), caption=title)
        run.log(payload)
        run.finish()
    except Exception as e:  # W&B is a mirror of report.md: its failure must not lose the report
        log.warning("report: W&B logging failed (%s: %s); report.md is complete", type(e).__name__, e)
