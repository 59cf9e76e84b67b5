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
from pathlib import Path
from typing import Any

from distill.core.errors import DataError
from distill.evaluation import results as R
from distill.reporting.columns import Column, collect_columns, suite_order
from distill.reporting.figures import draw_figures
from distill.reporting.tables import markdown_table, suite_rows

log = logging.getLogger(__name__)


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
                ", ".join(suite_order(set(c.results))),
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


def _details(columns: list[Column], suite: str) -> list[str]:
    """What the suite's metric kinds show beyond their rows (`MetricKind.details`), one block per task."""
    from distill.evaluation.registry import kinds

    tasks: dict[str, str] = {}
    for c in columns:
        res = c.results.get(suite)
        for name, t in (res.tasks if res is not None else {}).items():
            tasks.setdefault(name, t.metric or "")
    out = []
    for name, metric in tasks.items():
        known = kinds().get(metric)
        if known is None or known.details is None:
            continue
        results = []
        for c in columns:
            res = c.results.get(suite)
            task = res.tasks.get(name) if res is not None else None
            results.append((c.label, task.result if task is not None else None))
        block = known.details(name, results)
        if block:
            out += [block, ""]
    return out


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
    suites = suite_order({s for c in columns for s in c.results})
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
        lines += _details(columns, suite)
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
