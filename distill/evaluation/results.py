"""The one reader of evaluation results, and where they lie in a run folder.

`runner` writes `<out>/<suite>.json`: the model, the settings, and per task its `metric` kind, its full `result`
and its headline numbers (`summary`). Everything that reads them back (the report, the experiment, the model
card, the runner itself for the teacher's results) goes through `SuiteResult`:

    res = read_suite(student_results(run, "quick"))
    res.first("pronoun_probe").result["per_prompt"]     # the full result of the first task of that kind
    [(m.task, m.key, m.value, m.ci) for m in res.metrics()]   # every headline number with its row and interval

Paths: a run's student results are in `<run>/eval/`, its teacher's in `<run>/eval/teacher/`; the evaluation
spells every run-folder path through the functions here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.core.errors import DataError
from distill.core.rundir import EVAL_DIR as EVAL_DIR
from distill.core.rundir import FINAL_DIR as FINAL_DIR
from distill.core.rundir import TEACHER_DIR as TEACHER_DIR
from distill.core.rundir import RunDir
from distill.evaluation.registry import Row, kinds

GENERATIONS_SUFFIX = "_generations.jsonl"
COMPARISON_SUFFIX = "_comparison.md"
# The run folder's layout is `distill.core.rundir.RunDir`'s; the functions below name what evaluation reads and writes.


def eval_dir(run_dir: str | Path) -> Path:
    """`<run>/eval`: the student's results."""
    return RunDir(run_dir).eval


def teacher_dir(run_dir: str | Path) -> Path:
    """`<run>/eval/teacher`: the teacher's results."""
    return RunDir(run_dir).teacher_eval


def results_file(folder: str | Path, suite: str) -> Path:
    """`<folder>/<suite>.json`."""
    return Path(folder) / f"{suite}.json"


def generations_file(folder: str | Path, suite: str) -> Path:
    """`<folder>/<suite>_generations.jsonl`: every sampled continuation with its labels."""
    return Path(folder) / f"{suite}{GENERATIONS_SUFFIX}"


def student_results(run_dir: str | Path, suite: str) -> Path:
    return results_file(eval_dir(run_dir), suite)


def teacher_results(run_dir: str | Path, suite: str) -> Path:
    return results_file(teacher_dir(run_dir), suite)


def comparison_file(run_dir: str | Path, suite: str) -> Path:
    """`<run>/eval/<suite>_comparison.md`: teacher vs student, written by `evaluate_run`."""
    return eval_dir(run_dir) / f"{suite}{COMPARISON_SUFFIX}"


def figures_dir(run_dir: str | Path) -> Path:
    return RunDir(run_dir).figures


def run_config_file(run_dir: str | Path) -> Path:
    """`<run>/config.yaml`: the resolved recipe a run was trained with (its presence makes a folder a run)."""
    return RunDir(run_dir).config


def final_dir(run_dir: str | Path) -> Path:
    """`<run>/final`: the trained student."""
    return RunDir(run_dir).final


def val_blocks_file(run_dir: str | Path) -> Path:
    """`<run>/val_blocks.safetensors`: the held-out validation blocks training saved."""
    return RunDir(run_dir).val_blocks


def number(v: Any) -> float | None:
    """A finite number as float, else None (bools, None, nan and text are not numbers)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


@dataclass(frozen=True)
class Metric:
    """One headline number of one task."""

    task: str
    metric: str
    """The task's metric kind."""
    key: str
    value: Any
    ci: list | None
    """Its 95% interval [low, high] when the kind gives one."""
    row: Row | None
    """How a report shows it; None for a key no registered kind names (a newer runner's number)."""


@dataclass
class TaskResult:
    """One task of a suite: its kind, its full result and its headline numbers."""

    name: str
    metric: str | None
    result: dict
    summary: dict
    seconds: float | None = None

    def value(self, key: str) -> float | None:
        """A headline number as a finite float, else None."""
        return number(self.summary.get(key))

    def interval(self, key: str) -> list[float] | None:
        """The 95% interval of a headline number, when its row names one and both ends are finite."""
        row = self.row(key)
        ci = self.summary.get(row.ci) if row is not None and row.ci else None
        if isinstance(ci, list) and len(ci) == 2 and all(number(x) is not None for x in ci):
            return [float(ci[0]), float(ci[1])]
        return None

    def row(self, key: str) -> Row | None:
        known = kinds().get(self.metric or "")
        rows = {r.key: r for r in known.rows} if known is not None else {}
        if key in rows:
            return rows[key]
        return next((r for k in kinds().values() for r in k.rows if r.key == key), None)


@dataclass
class SuiteResult:
    """A `<suite>.json`, typed: the suite, the model and its tasks (in the order they ran)."""

    suite: str
    description: str
    model: dict
    tasks: dict[str, TaskResult]
    payload: dict = field(repr=False)
    """The file as written (settings, versions, timings)."""
    path: Path | None = None

    @classmethod
    def of(cls, payload: dict | SuiteResult, path: Path | None = None) -> SuiteResult:
        """The typed view of a payload as `runner` writes it (a SuiteResult is returned as it is)."""
        if isinstance(payload, SuiteResult):
            return payload
        summary = payload.get("summary") or {}
        raw = payload.get("tasks") or {}
        tasks = {}
        for name in list(summary) + [n for n in raw if n not in summary]:
            t = raw.get(name) if isinstance(raw.get(name), dict) else {}
            s = summary.get(name)
            tasks[name] = TaskResult(
                name,
                t.get("metric"),
                t.get("result") or {},
                s if isinstance(s, dict) else {},
                t.get("seconds"),
            )
        return cls(
            str(payload.get("suite", "")),
            payload.get("description") or "",
            payload.get("model") or {},
            tasks,
            payload,
            path,
        )

    @property
    def settings(self) -> dict:
        return self.payload.get("settings") or {}

    def task(self, name: str) -> TaskResult | None:
        return self.tasks.get(name)

    def first(self, metric: str) -> TaskResult | None:
        """The first task of kind `metric`, or None."""
        return next((t for t in self.tasks.values() if t.metric == metric), None)

    def summary(self, name: str) -> dict | None:
        """The headline numbers of task `name` (None when the suite has no such task)."""
        t = self.tasks.get(name)
        return t.summary if t is not None and name in (self.payload.get("summary") or {}) else None

    def metrics(self) -> list[Metric]:
        """Every headline number of every task, with its row (None for a key no kind names) and interval."""
        hidden = {key for k in kinds().values() for key in k.hidden}
        out = []
        for t in self.tasks.values():
            for key, value in t.summary.items():
                row = t.row(key)
                if row is None and key in hidden:
                    continue
                ci = t.summary.get(row.ci) if row is not None and row.ci else None
                out.append(Metric(t.name, t.metric or "", key, value, ci, row))
        return out


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); re-run the evaluation that wrote it") from None


def is_suite_payload(payload: Any) -> bool:
    return isinstance(payload, dict) and "suite" in payload and "summary" in payload


def read_suite(path: str | Path) -> SuiteResult:
    """Read one `<suite>.json`; a file that is not one is a DataError naming it."""
    p = Path(path)
    payload = _load(p)
    if not is_suite_payload(payload):
        raise DataError(
            f"{p}: not suite results (no `suite` and `summary`); give a <suite>.json the runner wrote"
        )
    return SuiteResult.of(payload, p)


def read_folder(folder: str | Path) -> dict[str, SuiteResult]:
    """Suite name -> results of every `<suite>.json` in `folder` (other JSON files are skipped)."""
    out: dict[str, SuiteResult] = {}
    for f in sorted(Path(folder).glob("*.json")):
        payload = _load(f)
        if is_suite_payload(payload):
            out[str(payload["suite"])] = SuiteResult.of(payload, f)
    return out


def read_if_present(path: str | Path) -> SuiteResult | None:
    """`read_suite(path)` when the file exists, else None."""
    return read_suite(path) if Path(path).is_file() else None
