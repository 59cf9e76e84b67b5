"""The models a report compares, as columns: each distinct teacher once, then each run's student in the order
given, named by its method, with its results per suite (read through `evaluation.results`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from distill.core.errors import DataError
from distill.evaluation import results as R
from distill.evaluation.results import SuiteResult

log = logging.getLogger(__name__)


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
        from distill.core.config import method_label
        from distill.core.recipe import load_config

        try:
            return method_label(load_config(R.run_config_file(run_dir)))
        except Exception:  # a run from an older version whose config no longer loads: its folder name will do
            return fallback
    return fallback


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


def suite_order(names: set[str]) -> list[str]:
    first = [s for s in SUITE_ORDER if s in names]
    return first + sorted(names - set(first))
