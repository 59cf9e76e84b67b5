"""Tables: the one number formatter (`fmt`), the one markdown table, and a suite's rows for any set of models,
as the metric kinds define them (`evaluation.registry`)."""

from __future__ import annotations

import logging
from typing import Any

from distill.evaluation.registry import Row, all_hidden, all_rows, kinds
from distill.evaluation.results import SuiteResult, number

log = logging.getLogger(__name__)

NOT_EVALUATED = "-"
UNDEFINED = "n/a"


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table or a sentence: `digits` significant digits (1 decimal from 100 up); undefined
    (None, NaN, infinite, not a number) -> `n/a`. The one number formatter of reports, cards and experiments."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    x = number(v)
    if x is None:
        return UNDEFINED
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.{digits}g}"


def fmt_ci(ci: Any) -> str:
    """` [low, high]` of a 95% interval for a table cell, or "" when there is none or either end is undefined."""
    if not isinstance(ci, list | tuple) or len(ci) != 2 or number(ci[0]) is None or number(ci[1]) is None:
        return ""
    return f" [{fmt(ci[0])}, {fmt(ci[1])}]"


def _cell(summary: dict | None, row: Row) -> str:
    if summary is None:
        return NOT_EVALUATED
    if row.of is not None:
        return f"{fmt(summary.get(row.key))} / {fmt(summary.get(row.of))}"
    text = fmt(summary.get(row.key))
    if row.ci and number(summary.get(row.key)) is not None:
        text += fmt_ci(summary.get(row.ci))  # nothing where an end is undefined (e.g. one prompt per group)
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
