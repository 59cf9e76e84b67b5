"""An evaluation's numbers merged into a model card: a suite's table, teacher and model side by side, in a section
a later evaluation with the same suite replaces, and its metrics in the card's Hub `model-index`."""

from __future__ import annotations

import re
from pathlib import Path

from distill.evaluation.results import SuiteResult
from distill.reporting.card import CARD, EVAL_MARK, TAG, metric_entry, read_front_matter, write_front_matter

# A table row's label names its interval ("female share [95% CI]"); a `model-index` entry holds the value alone.
_INTERVAL_MARK = re.compile(r"\s*\[95% CI\]")


def _suite_metrics(results: SuiteResult) -> list[dict]:
    """`model-index` metrics of one suite's results: every headline number of every task that a kind names,
    named without the interval mark of the table's row (the entry has no interval)."""
    out = []
    for m in results.metrics():
        name = _INTERVAL_MARK.sub("", f"{m.task}: {m.row.label}") if m.row is not None else ""
        if m.row is not None and (e := metric_entry(f"{m.task}/{m.key}", name, m.value)):
            out.append(e)
    return out


def _sizes(results: SuiteResult) -> list[str]:
    """One line per task saying how many prompts, texts or tokens its numbers rest on."""
    from distill.evaluation.registry import kinds

    lines = []
    for task in results.tasks.values():
        known = kinds().get(task.metric or "")
        if known is not None and known.sizes is not None and (line := known.sizes(task.name, task.result)):
            lines.append(line)
    return lines


def _hub_datasets(results: SuiteResult) -> list[str]:
    """The Hub datasets the suite's tasks read (those without a local `path`)."""
    from distill.evaluation.registry import kinds

    out = []
    for t in (results.settings.get("tasks") or {}).values():
        if not isinstance(t, dict) or t.get("path"):
            continue
        known = kinds().get(t.get("metric") or "")
        if isinstance(t.get("dataset"), str):
            out.append(t["dataset"])
        elif known is not None and known.hub_dataset is not None and (name := known.hub_dataset(t)):
            out.append(name)
    return out


def _utility(results: SuiteResult, teacher: SuiteResult | None) -> list[str]:
    """One line per perplexity task that both this model and the teacher ran: the two on the same text, and the
    ratio."""
    from distill.reporting.tables import fmt

    lines = []
    for task in results.tasks.values():
        t_task = teacher.tasks.get(task.name) if teacher is not None else None
        if task.metric != "perplexity" or t_task is None:
            continue
        mine, theirs = task.value("ppl"), t_task.value("ppl")
        if mine is None or not theirs:
            continue
        lines.append(
            f"`{task.name}`: perplexity {fmt(mine)} against the teacher's {fmt(theirs)}, "
            f"{mine / theirs:.2f} times the teacher's, on the same text ({task.result.get('source', '')})"
        )
    return lines


def merge_evaluation(
    model_dir: Path,
    suite: str,
    results: dict | SuiteResult,
    teacher_results: dict | SuiteResult | None = None,
    others: list[tuple[str, dict | SuiteResult]] | None = None,
) -> bool:
    """Merge one suite's results into the card next to the weights: its section (teacher, any `others` such as
    the plain-KD baseline, and this model side by side, intervals, sample sizes, perplexity on the same text
    against the teacher's) and its `model-index` entry, replacing those of an earlier evaluation with the same
    suite; everything else is kept. Only cards fairdistill wrote are touched. Returns whether it wrote."""
    from distill.evaluation.results import SuiteResult
    from distill.reporting.tables import suite_table

    results = SuiteResult.of(results)
    teacher_results = SuiteResult.of(teacher_results) if teacher_results else None

    path = Path(model_dir) / CARD
    if not path.is_file():
        return False
    meta, body = read_front_matter(path)
    if TAG not in (meta.get("tags") or []):
        return False
    mark = EVAL_MARK.format(suite=suite)
    cols = ([("teacher", teacher_results)] if teacher_results else []) + [
        *((label, SuiteResult.of(r)) for label, r in others or []),
        ("this model", results),
    ]
    description = results.description.strip()
    sizes = "\n".join(f"- {line}" for line in _sizes(results))
    utility = "\n".join(f"- {line}" for line in _utility(results, teacher_results))
    section = (
        f"{mark}\n### Suite `{suite}`\n\n"
        + (f"{description}\n\n" if description else "")
        + f"{suite_table(cols)}\n\n"
        + (f"What the numbers rest on:\n\n{sizes}\n\n" if sizes else "")
        + (f"Utility, this model against its teacher on the same text:\n\n{utility}\n\n" if utility else "")
        + "Intervals (in brackets) are 95% percentile bootstraps; a number without one has none computed. `n/a` is "
        "undefined (e.g. no gendered text); fluency is not given for the model that scores it (its own samples "
        "under itself).\n" + f"{mark}\n"
    )
    if mark in body:
        head, _, rest = body.partition(mark)
        _, _, tail = rest.partition(mark)
        body = head.rstrip("\n") + "\n\n" + section + "\n" + tail.lstrip("\n")
    else:
        anchor = "\n## Bias and limitations"
        head, found, tail = body.partition(anchor)
        body = head.rstrip("\n") + "\n\n" + section + (found + tail if found else "")

    index = meta.setdefault("model-index", [{"name": model_dir.name, "results": []}])
    entries = index[0].setdefault("results", [])
    dataset = {"type": f"fairdistill/{suite}", "name": f"fairdistill `{suite}` suite"}
    entries[:] = [e for e in entries if (e.get("dataset") or {}).get("type") != dataset["type"]]
    hub_data = _hub_datasets(results)
    if hub_data:  # the Hub datasets this evaluation read (BOLD, WikiText, ...), listed once
        meta["datasets"] = list(dict.fromkeys([*(meta.get("datasets") or []), *hub_data]))
    metrics = _suite_metrics(results)
    if metrics:
        entries.append(
            {
                "task": {"type": "text-generation", "name": "Text Generation"},
                "dataset": dataset,
                "metrics": metrics,
            }
        )
    write_front_matter(path, meta, body)
    return True
