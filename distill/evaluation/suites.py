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
as a `ConfigError`. The metrics themselves are defined in `eval/README.md`.
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

from distill.config import build_section as _build
from distill.config import check_range as _in_range
from distill.config import parse_override
from distill.errors import ConfigError
from distill.evaluation.bold import BOLD_DOMAINS, BOLD_GENDER_GROUPS
from distill.evaluation.downstream.bias_in_bios import BIOS_HUB_ID
from distill.evaluation.downstream.crows_pairs import CROWS_PAIRS_HUB_ID
from distill.evaluation.downstream.stereoset import STEREOSET_HUB_ID
from distill.evaluation.polarity import DEFAULT_FEMALE_WORDS, DEFAULT_MALE_WORDS
from distill.evaluation.probe import DEFAULT_TEMPLATES
from distill.evaluation.stereotype import STATS_COLUMNS, WINOGENDER_DIR
from distill.resources import resource_path

SUITE_DIR = "eval"
WIKITEXT_HUB_ID = "Salesforce/wikitext"
WIKITEXT_CONFIG = "wikitext-103-raw-v1"
# Task names become override prefixes (`templates.n_per_prompt=1`) and JSON keys.
_TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Suite names become file names (`<suite>.json`).
_SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# --------------------------------------------------------------------------------------------------------------
# Task kinds


@dataclass
class GenerationTask:
    """Sample continuations of BOLD-format prompts; label each by gender polarity and score its sentiment."""

    metric: str = "generation_disparity"
    """The metric kind (see METRICS)."""
    path: str | None = None
    """Prompts in BOLD's JSON format (`{group: {name: [prompt, ...]}}`), or a folder holding
    `<domain>_prompt.json`; null loads the hub copy `AmazonScience/bold` (needs the hub)."""
    domain: str = "profession"
    """BOLD domain whose prompts are used: profession, gender, race, religious_ideology, political_ideology."""
    groups: list[str] | None = None
    """Keep only these groups (null: all groups of the domain)."""
    max_per_group: int | None = None
    """Use at most this many prompts per group (a seeded subset; null: all)."""
    n_per_prompt: int = 1
    """Continuations sampled per prompt."""
    max_new_tokens: int = 32
    """Length of each continuation in tokens (a continuation may stop earlier at eos)."""
    top_p: float = 0.95
    """Nucleus sampling threshold, in (0, 1]."""
    temperature: float = 1.0
    """Sampling temperature; 0 is greedy."""
    seed: int = 0
    """Seeds sampling (per prompt and sample index, so results do not depend on batch_size), the prompt subset
    and the bootstrap."""
    batch_size: int = 32
    """Sequences generated together."""
    fluency: bool = True
    """Also score the continuations' perplexity under the reference model (see the suite's `reference`)."""
    male_words: str = DEFAULT_MALE_WORDS
    """Male word list for gender polarity (one word per line)."""
    female_words: str = DEFAULT_FEMALE_WORDS
    """Female word list for gender polarity."""
    n_boot: int = 1000
    """Bootstrap resamples for the 95% intervals."""


@dataclass
class DisparityTask(GenerationTask):
    """BOLD generation disparity: per-group parity min(F/M, M/F), its mean and min, the female share with a
    95% interval (Dhamala et al. 2021)."""


@dataclass
class SentimentTask(GenerationTask):
    """VADER sentiment gap between two BOLD groups (default American_actors - American_actresses)."""

    metric: str = "sentiment_gap"
    domain: str = "gender"
    groups: list[str] | None = field(default_factory=lambda: list(BOLD_GENDER_GROUPS))
    """Exactly two groups (A, B); the gap is mean sentiment of A minus that of B."""


@dataclass
class PronounProbeTask:
    """log P(he-words) - log P(she-words) after `The {profession} said that` and the other templates."""

    metric: str = "pronoun_probe"
    """The metric kind (see METRICS)."""
    professions: str = "word_lists/professions.txt"
    """Profession list, one per line."""
    templates: str = DEFAULT_TEMPLATES
    """Templates containing `{profession}`, one per line."""
    max_professions: int | None = None
    """Probe only the first N professions (null: all)."""
    batch_size: int = 64
    """Prompts per forward pass."""
    stats: str | None = "word_lists/professions_bls.tsv"
    """Share of women per profession (US BLS, with the source of each figure); the result adds the occupational
    stereotype metrics over the professions that have a figure. Null: skip them."""


@dataclass
class WinogenderTask:
    """Occupational stereotype on Winogender templates: per-occupation log P(she) - log P(he) at the pronoun slot,
    its association with BLS % women and with the teacher's scores, spread and lean, seen vs unseen occupations."""

    metric: str = "winogender"
    """The metric kind (see METRICS)."""
    path: str = WINOGENDER_DIR
    """Folder holding Winogender's templates.tsv and occupations-stats.tsv."""
    statistic: str = "bls_pct_female"
    """Column of occupations-stats.tsv the association is computed against: bls_pct_female or bergsma_pct_female."""
    prompts: str | None = None
    """Transfer prompt file that decides which occupations are `seen`; null: the run's own `data.prompts` when
    the checkpoint is a run directory sampled from prompts, else recipes/data/occupation_lines.txt."""
    batch_size: int = 64
    """Prompts per forward pass."""
    n_boot: int = 1000
    """Bootstrap resamples (over occupations) for the 95% intervals."""
    seed: int = 0
    """Seeds the bootstrap."""
    plot: bool = True
    """Write the scatter of occupation score vs % women (`<suite>_winogender.png`) next to the results."""


@dataclass
class PerplexityTask:
    """Token-weighted perplexity over non-overlapping blocks of held-out text."""

    metric: str = "perplexity"
    """The metric kind (see METRICS)."""
    run_validation: bool = False
    """When the checkpoint is a run directory, use that run's own validation blocks (its val_blocks.safetensors)
    and their block size; otherwise, or when the run has no such file, fall back to `path` / the hub."""
    path: str | None = None
    """Local held-out text: .txt (documents separated by blank lines), .jsonl or .parquet (`text_field`); null
    loads `dataset` from the hub."""
    dataset: str = WIKITEXT_HUB_ID
    """Hub dataset used when `path` is null."""
    dataset_config: str | None = WIKITEXT_CONFIG
    """Configuration of the hub dataset."""
    split: str = "test"
    """Split of the hub dataset."""
    text_field: str = "text"
    """Column (hub, .jsonl, .parquet) holding the text."""
    join: str | None = None
    """Join all documents into one text with this separator (WikiText stores one line per row: use "");
    null separates documents with the eos token."""
    max_documents: int | None = None
    """Use only the first N documents (null: all)."""
    block_size: int | None = None
    """Tokens per block (null: the model's context, at most 1024). Compare models only at the same size."""
    batch_size: int = 8
    """Blocks per forward pass."""


@dataclass
class CrowsPairsTask:
    """CrowS-Pairs: % of pairs where the stereotypical sentence is more likely (50 is ideal)."""

    metric: str = "crows_pairs"
    """The metric kind (see METRICS)."""
    path: str | None = None
    """The published `crows_pairs_anonymized.csv`; null loads `dataset` from the hub."""
    dataset: str = CROWS_PAIRS_HUB_ID
    """Hub dataset used when `path` is null."""
    bias_type: str | None = "gender"
    """Keep only pairs of this bias type (null: all nine)."""
    batch_size: int = 16
    """Sentences per forward pass."""
    seed: int = 0
    """Seeds the bootstrap."""
    n_boot: int = 1000
    """Bootstrap resamples for the 95% interval."""


@dataclass
class StereoSetTask:
    """StereoSet intrasentence: SS (50 is ideal), LMS (100 is ideal) and ICAT."""

    metric: str = "stereoset"
    """The metric kind (see METRICS)."""
    path: str | None = None
    """The published `dev.json`; null loads `dataset` from the hub."""
    dataset: str = STEREOSET_HUB_ID
    """Hub dataset used when `path` is null."""
    bias_type: str | None = "gender"
    """Keep only examples of this bias type (null: all four)."""
    batch_size: int = 16
    """Sentences per forward pass."""
    seed: int = 0
    """Seeds the bootstrap."""
    n_boot: int = 1000
    """Bootstrap resamples for the 95% interval."""


@dataclass
class BiasInBiosTask:
    """Bias-in-Bios: linear probe for occupation on frozen features; per-occupation TPR gap and its RMS."""

    metric: str = "bias_in_bios"
    """The metric kind (see METRICS)."""
    train_path: str | None = None
    """Local training biographies (.jsonl, .json or .parquet with hard_text, profession, gender); null loads
    `dataset` split `train_split` from the hub."""
    test_path: str | None = None
    """Local test biographies; null loads `dataset` split `test_split` from the hub."""
    dataset: str = BIOS_HUB_ID
    """Hub dataset used when a path is null."""
    train_split: str = "train"
    """Hub split the probe is trained on."""
    test_split: str = "test"
    """Hub split the TPR gap is measured on."""
    max_train: int | None = 5000
    """Seeded subset of the training biographies (null: all; the full split is 250k)."""
    max_test: int | None = 2000
    """Seeded subset of the test biographies (null: all)."""
    max_length: int = 128
    """Tokens of each biography fed to the model."""
    batch_size: int = 32
    """Biographies per forward pass."""
    l2: float = 1e-3
    """L2 penalty of the logistic-regression probe."""
    seed: int = 0
    """Seeds the subsets and the probe."""


Task = (
    DisparityTask
    | SentimentTask
    | PronounProbeTask
    | WinogenderTask
    | PerplexityTask
    | CrowsPairsTask
    | StereoSetTask
    | BiasInBiosTask
)

METRICS: dict[str, type] = {
    "generation_disparity": DisparityTask,
    "sentiment_gap": SentimentTask,
    "pronoun_probe": PronounProbeTask,
    "winogender": WinogenderTask,
    "perplexity": PerplexityTask,
    "crows_pairs": CrowsPairsTask,
    "stereoset": StereoSetTask,
    "bias_in_bios": BiasInBiosTask,
}
"""Metric kind -> the task dataclass holding its settings. The runner dispatches on the same keys."""

# Fields naming a local file that must exist when set (a folder is fine for BOLD's `path`).
_FILE_FIELDS = (
    "path",
    "professions",
    "templates",
    "male_words",
    "female_words",
    "train_path",
    "test_path",
    "prompts",
    "stats",
)


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
    cls = METRICS.get(metric) if isinstance(metric, str) else None
    return [f.name for f in dataclasses.fields(cls) if f.name != "metric"] if cls else []


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


def _did_you_mean(value: str, options: list[str] | tuple[str, ...]) -> str:
    hint = difflib.get_close_matches(str(value), list(options), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def _check_task(name: str, task: Any, problems: list[str]) -> None:
    """Range, choice and file checks of one built task (types were checked while building)."""
    w = f"tasks.{name}"
    for f in _FILE_FIELDS:
        value = getattr(task, f, None)
        if isinstance(value, str) and value and not resource_path(value).exists():
            problems.append(
                f"{w}.{f}: {value!r} does not exist; check the path (relative paths are resolved from the working "
                "directory, then the project root)"
            )
    counts = ("batch_size", "n_boot", "n_per_prompt", "max_new_tokens", "max_length", "max_per_group")
    for f in counts + ("max_professions", "max_documents", "max_train", "max_test"):
        if hasattr(task, f):
            _in_range(problems, f"{w}.{f}", getattr(task, f), 1)
    if isinstance(task, GenerationTask):
        _in_range(problems, f"{w}.top_p", task.top_p, 0, 1, lo_open=True)
        _in_range(problems, f"{w}.temperature", task.temperature, 0)
        if isinstance(task.domain, str) and task.domain not in BOLD_DOMAINS:
            problems.append(
                f"{w}.domain must be one of {', '.join(BOLD_DOMAINS)}, got {task.domain!r}"
                + _did_you_mean(task.domain, BOLD_DOMAINS)
            )
        if isinstance(task, SentimentTask) and (not isinstance(task.groups, list) or len(task.groups) != 2):
            problems.append(
                f"{w}.groups must name exactly two groups [A, B] (the gap is A - B), got {task.groups!r}; "
                f"e.g. {list(BOLD_GENDER_GROUPS)}"
            )
        if isinstance(task.groups, list) and not task.groups:
            problems.append(f"{w}.groups is empty; list group names or use null for all groups")
    if isinstance(task, PerplexityTask):
        _in_range(problems, f"{w}.block_size", task.block_size, 2)
    if isinstance(task, BiasInBiosTask):
        _in_range(problems, f"{w}.l2", task.l2, 0)
    if (
        isinstance(task, WinogenderTask)
        and isinstance(task.statistic, str)
        and task.statistic not in STATS_COLUMNS
    ):
        problems.append(
            f"{w}.statistic must be one of {', '.join(STATS_COLUMNS)}, got {task.statistic!r}"
            + _did_you_mean(task.statistic, STATS_COLUMNS)
        )


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
    suite = _build(Suite, data, "", problems)
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
        metric = spec.get("metric")
        if metric is None:
            problems.append(f"{w}.metric is required; one of {', '.join(METRICS)}")
            continue
        if metric not in METRICS:
            problems.append(
                f"{w}.metric must be one of {', '.join(METRICS)}, got {metric!r}"
                + _did_you_mean(str(metric), list(METRICS))
            )
            continue
        task = _build(METRICS[metric], spec, w, problems)
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
