"""Evaluation suites as data: one YAML file per suite in `eval/`, validated into dataclasses before any model loads.

A suite holds a few suite-level settings and a mapping of named tasks; each task names its `metric` kind and
that kind's settings (every field below has a docstring and a default, so a task lists only what it changes):

    # eval/templates.yaml: generation disparity on the project's offline profession prompts.
    description: BOLD-style generation disparity on eval/data/profession_templates.json
    tasks:
      templates:
        metric: generation_disparity
        path: eval/data/profession_templates.json
        n_per_prompt: 5

`load_suite("quick", ["n_per_prompt=1", "probe.max_professions=8"])` reads `eval/quick.yaml` (or any YAML path),
applies `key=value` overrides and returns a `Suite`. An override key is a suite field (`device=cpu`), a task
field applied to every task that has it (`max_new_tokens=4`), or `<task>.<field>` for one task. Every problem
(unknown keys with a "did you mean", wrong types, out-of-range values, missing files) is gathered and raised once
as a `ConfigError`. Each `metric` kind and its settings is defined in one module of `evaluation/metrics/` (see
`registry`); the metrics themselves are defined in `eval/README.md`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.core.errors import ConfigError
from distill.core.recipe import parse_override
from distill.core.resources import resource_path
from distill.core.sections import build_section
from distill.evaluation.registry import check_range, did_you_mean, kinds

SUITE_DIR = "eval"
# Task names become override prefixes (`templates.n_per_prompt=1`) and JSON keys.
_TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Suite names become file names (`<suite>.json`).
_SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class Suite:
    """A named list of evaluation tasks and the settings they share."""

    description: str = ""
    """One line saying what the suite measures (shown in results and reports)."""
    reference: str | None = "teacher"
    """Reference model for fluency: `teacher` (the run's teacher when evaluating a run directory; none
    otherwise), a model directory, hub id or `embedded:smollm2-135m`, or null (fluency skipped)."""
    device: str = "auto"
    """`auto` (cuda when available, else cpu), or a torch device such as `cpu` or `cuda:0`."""
    tasks: dict[str, Any] = field(default_factory=dict)
    """Task name -> task settings (a `metric` key and that kind's fields)."""
    name: str = field(default="", metadata={"internal": True})
    """The suite's name: its file name without `.yaml` (results are written to `<name>.json`)."""
    source: str | None = field(default=None, metadata={"internal": True})
    """The YAML file the suite was read from."""
    overrides: list[str] = field(default_factory=list, metadata={"internal": True})
    """The `key=value` overrides applied on top of the file."""

    def to_dict(self) -> dict[str, Any]:
        """The resolved suite as plain data (saved next to the results, so a number can be re-run)."""
        return {
            "name": self.name,
            "source": self.source,
            "overrides": list(self.overrides),
            "description": self.description,
            "reference": self.reference,
            "device": self.device,
            "tasks": {n: dataclasses.asdict(t) for n, t in self.tasks.items()},
        }


# --------------------------------------------------------------------------------------------------------------
# Finding suite files


def suite_dir() -> Path:
    """The folder holding the shipped suites (`eval/` in a checkout, or inside the installed wheel)."""
    return resource_path(SUITE_DIR)


def list_suites() -> list[str]:
    """Names of the shipped suites (`eval/*.yaml`), sorted."""
    return sorted(p.stem for p in suite_dir().glob("*.yaml"))


def suite_path(suite: str | Path) -> Path:
    """A suite name (`quick`) or a YAML path -> the file; ConfigError with the available names if none."""
    text = str(suite)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        p = resource_path(text)
        if not p.is_file():
            raise ConfigError(
                f"suite file {text!r} not found; give a YAML path or one of: {', '.join(list_suites())}"
            )
        return p
    p = suite_dir() / f"{text}.yaml"
    if not p.is_file():
        names = list_suites()
        hint = difflib.get_close_matches(text, names, n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(f"unknown suite {text!r}{extra} (available: {', '.join(names)})")
    return p


# --------------------------------------------------------------------------------------------------------------
# Overrides


def _task_fields(metric: Any) -> list[str]:
    """Fields a bare override can set on a task of kind `metric` (not `metric` itself: that changes the kind)."""
    known = kinds().get(metric) if isinstance(metric, str) else None
    return [f.name for f in dataclasses.fields(known.settings) if f.name != "metric"] if known else []


def apply_suite_overrides(data: dict, overrides: list[str], problems: list[str]) -> dict:
    """Apply `key=value` overrides to raw suite data in place; unknown targets are recorded in `problems`.

    `key` is a suite field (`device`), a task field applied to every task that has it (`n_per_prompt`), or
    `<task>.<field>` (also `tasks.<task>.<field>`). Values are parsed as YAML (`null`, `[a, b]`, `3`)."""
    suite_fields = [f.name for f in dataclasses.fields(Suite) if not f.metadata.get("internal")]
    tasks = data.get("tasks")
    tasks = tasks if isinstance(tasks, dict) else {}
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] == "tasks" and len(keys) > 1:
            keys = keys[1:]
        if len(keys) == 1 and keys[0] in suite_fields and keys[0] != "tasks":
            data[keys[0]] = value
            continue
        if len(keys) == 1:
            targets = [
                t
                for t, spec in tasks.items()
                if isinstance(spec, dict) and keys[0] in _task_fields(spec.get("metric"))
            ]
            if not targets:
                known = sorted(
                    {
                        f
                        for spec in tasks.values()
                        if isinstance(spec, dict)
                        for f in _task_fields(spec.get("metric"))
                    }
                )
                options = [f for f in suite_fields if f != "tasks"] + known
                hint = difflib.get_close_matches(keys[0], options, n=1, cutoff=0.6)
                extra = f"; did you mean {hint[0]!r}?" if hint else ""
                problems.append(
                    f"override {text!r}: no task in this suite has a field {keys[0]!r}{extra} "
                    f"(suite fields: {', '.join(o for o in suite_fields if o != 'tasks')}; task fields: {', '.join(known)})"
                )
            for t in targets:
                tasks[t][keys[0]] = value
            continue
        if len(keys) == 2:
            task, name = keys
            if task not in tasks:
                hint = difflib.get_close_matches(task, list(tasks), n=1, cutoff=0.6)
                extra = f"; did you mean {hint[0]!r}?" if hint else ""
                problems.append(
                    f"override {text!r}: no task named {task!r}{extra} (tasks: {', '.join(tasks)})"
                )
                continue
            if isinstance(tasks[task], dict):
                tasks[task][name] = value  # an unknown field is reported by the schema check, with a hint
            continue
        problems.append(
            f"override {text!r}: use <field>=value (every task with that field), <task>.<field>=value or a suite "
            "field such as device=cpu"
        )
    return data


# --------------------------------------------------------------------------------------------------------------
# Validation


# Settings any kind may have, checked by name: counts that must be >= 1.
_COUNTS = (
    "batch_size",
    "n_boot",
    "n_per_prompt",
    "max_new_tokens",
    "max_length",
    "max_per_group",
    "max_professions",
    "max_documents",
    "sample",
    "max_train",
    "max_test",
)


def _check_task(name: str, task: Any, problems: list[str]) -> None:
    """File and count checks of one built task, then its kind's own checks (types were checked while
    building)."""
    w = f"tasks.{name}"
    known = kinds()[task.metric]
    for f in known.files:
        value = getattr(task, f, None)
        if isinstance(value, str) and value and not resource_path(value).exists():
            problems.append(
                f"{w}.{f}: {value!r} does not exist; check the path (relative paths are resolved from the working "
                "directory, then the project root)"
            )
    for f in _COUNTS:
        if hasattr(task, f):
            check_range(problems, f"{w}.{f}", getattr(task, f), 1)
    if known.check is not None:
        known.check(w, task, problems)


def _check_device(device: Any, problems: list[str]) -> None:
    if not isinstance(device, str) or device == "auto":
        return
    import torch

    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        problems.append(f"device must be 'auto' or a torch device such as 'cpu' or 'cuda:0', got {device!r}")


def suite_from_dict(
    data: Any, name: str, source: str | None = None, overrides: list[str] | None = None
) -> Suite:
    """Build and validate a `Suite` from plain data (a parsed YAML file); raises one ConfigError listing every
    problem."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError(
            f"a suite must be a mapping (description:, tasks:, ...), got {type(data).__name__}", source
        )
    if not _SUITE_NAME.fullmatch(name):
        problems.append(
            f"suite name {name!r} may hold only letters, digits, '.', '_' and '-' (it names files)"
        )
    # Overrides edit a copy, so the caller's dict (e.g. a parsed file reused for several runs) stays as it was.
    data = apply_suite_overrides(copy.deepcopy(data), list(overrides or []), problems)
    suite = build_section(Suite, data, "", problems)
    _check_device(suite.device, problems)
    raw_tasks = data.get("tasks")
    tasks: dict[str, Any] = {}
    if not isinstance(raw_tasks, dict) or not raw_tasks:
        problems.append(
            "tasks must be a non-empty mapping of task name -> settings, e.g. "
            "tasks: {probe: {metric: pronoun_probe}}"
        )
        raw_tasks = {}
    for task_name, spec in raw_tasks.items():
        w = f"tasks.{task_name}"
        if not isinstance(task_name, str) or not _TASK_NAME.fullmatch(task_name):
            problems.append(f"{w}: a task name must be letters, digits and '_' (starting with a letter)")
            continue
        if not isinstance(spec, dict):
            problems.append(f"{w} must be a mapping with a `metric` key, got {spec!r}")
            continue
        metric, known = spec.get("metric"), kinds()
        if metric is None:
            problems.append(f"{w}.metric is required; one of {', '.join(known)}")
            continue
        if metric not in known:
            problems.append(
                f"{w}.metric must be one of {', '.join(known)}, got {metric!r}"
                + did_you_mean(str(metric), known)
            )
            continue
        task = build_section(known[metric].settings, spec, w, problems)
        _check_task(task_name, task, problems)  # skips values whose type was already reported
        tasks[task_name] = task
    if problems:
        raise ConfigError(problems, source)
    suite.tasks = tasks
    suite.name, suite.source, suite.overrides = name, source, list(overrides or [])
    return suite


def load_suite(suite: str | Path, overrides: list[str] | None = None) -> Suite:
    """Read a suite by name (`quick` -> `eval/quick.yaml`) or path, apply `key=value` overrides, validate it all
    at once."""
    path = suite_path(suite)
    source = (
        str(suite)
        if str(suite).endswith((".yaml", ".yml")) or "/" in str(suite)
        else f"{SUITE_DIR}/{path.name}"
    )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", source) from None
    return suite_from_dict(data if data is not None else {}, path.stem, source, overrides)
