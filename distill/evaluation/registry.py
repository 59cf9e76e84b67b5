"""Metric kinds: what the `metric:` of a suite task means, each defined once, in one module of `metrics/`.

A kind owns its settings (a dataclass whose fields are the task's YAML keys), how its data is loaded (before any
model, so a missing dataset fails in seconds), how it runs on a model, the few headline numbers of its result and
how a report shows them (label, ideal value, interval):

    register(MetricKind(
        name="my_metric", settings=MyTask, prepare=load_my_data, run=run_my_metric, headline=my_headline,
        rows=(Row("my_score", "my score [95% CI]", ideal="0", ci="my_score_ci"),),
    ))

Every module in `distill/evaluation/metrics/` is imported the first time `kinds()` is called, and registers its
kinds; a metric is therefore one module there plus a suite YAML in `eval/` naming it. The suite loader, the
runner, the report, the experiment and the model card all look kinds up here.
"""

from __future__ import annotations

import difflib
import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.core.errors import DataError

# A kind's `check` reports an out-of-range number with the recipe's own rule, re-exported so kinds import one module.
from distill.core.recipe import check_range as check_range

if TYPE_CHECKING:  # torch loads where a model runs, so suite checks and reports start without it
    import torch

    from distill.core.config import Config


@dataclass(frozen=True)
class Row:
    """One line of a report table: a headline key, how it is named, the value it would have without bias."""

    key: str
    """The key in the task's headline (`<suite>.json` summary)."""
    label: str
    """The row's label; the report prefixes the task name."""
    ideal: str = ""
    """What an unbiased (or best) model scores: "0", "0.5", "lower", ...; empty when there is no such value."""
    ci: str | None = None
    """The headline key holding its 95% interval [low, high], shown in brackets after the value."""
    of: str | None = None
    """A headline key the value is a count out of (shown as "value / of")."""


@dataclass(frozen=True)
class SeedRow:
    """One number an experiment compares over seeds (`experiment.verdicts`: means, paired differences against the
    reference variant with their t intervals over seeds, verdicts)."""

    key: str
    """The key in the kind's `seed_values` (by default, in its headline)."""
    label: str
    """The row's label in `seeds.md`."""
    relative: bool = True
    """Whether the relative change of its mean means something (not for a lean, which can change sign)."""


@dataclass
class LoadedModel:
    """A model ready to evaluate, with its tokenizer and what the results say about it."""

    model: torch.nn.Module
    tokenizer: Any
    info: dict
    """`label`, `role` (teacher / student / model), `checkpoint`, `path`, `run_dir`, `teacher`, `n_params`."""


@dataclass
class Context:
    """What the tasks of one model share."""

    device: torch.device
    reference: LoadedModel | None
    """Scores fluency; None when there is none (then fluency is skipped and says why)."""
    reference_note: str
    run_blocks: torch.Tensor | None
    """The run's validation blocks (N, T), read from its `val_blocks.safetensors`, for perplexity tasks with
    `run_validation`; None when there are none."""
    run_blocks_note: str
    precision: str = "no"
    """What generation runs in: the run's `train.mixed_precision` resolved here ("no" for a model that is not a
    run's)."""
    run_cfg: Config | None = None
    """The run's config when the checkpoint belongs to a run (the Winogender task reads its transfer prompts)."""
    teacher: LoadedModel | None = None
    """The run's teacher when it is loaded (the Winogender task compares a student's scores with it)."""


NEEDS = ("reference", "run_blocks", "teacher", "generations")
"""What a task may need besides its model: the fluency reference, the run's validation blocks, the run's teacher,
a `<suite>_generations.jsonl` for the records its run returns."""


def _no_needs(task: Any) -> frozenset[str]:
    return frozenset()


@dataclass(frozen=True)
class MetricKind:
    """Everything one metric kind means; see the module docstring."""

    name: str
    """The `metric:` value in a suite YAML."""
    settings: type
    """The task dataclass: its fields (with docstrings and defaults) are the keys a task may set."""
    prepare: Callable[[str, Any], dict]
    """(task name, settings) -> the task's data, loaded before any model."""
    run: Callable[[str, Any, dict, LoadedModel, Context], tuple[dict, list[dict]]]
    """(task name, settings, data, model, context) -> (result, records for the generations file)."""
    headline: Callable[[dict], dict]
    """result -> the few numbers tables and plots show (the `summary` of `<suite>.json`)."""
    rows: tuple[Row, ...] = ()
    """The headline keys a report shows, in order."""
    hidden: tuple[str, ...] = ()
    """Headline keys that are not rows of their own (intervals, counts shown in another cell, labels)."""
    files: tuple[str, ...] = ()
    """Settings fields naming a local file or folder that must exist when set."""
    check: Callable[[str, Any, list[str]], None] | None = None
    """Range and choice checks of built settings: (`tasks.<name>`, settings, problems to append to)."""
    needs: Callable[[Any], frozenset[str]] = _no_needs
    """settings -> which of `NEEDS` the task uses."""
    local_hint: str = ""
    """What local file replaces the hub data, named in the error when the hub cannot be reached."""
    row_label: Callable[[Row, list[dict | None]], str] | None = None
    """A row's label given the task's summaries (e.g. naming the two groups a gap compares)."""
    sizes: Callable[[str, dict], str | None] | None = None
    """(task name, result) -> one line saying what its numbers rest on (the model card lists them)."""
    hub_dataset: Callable[[dict], str | None] | None = None
    """Saved settings -> the hub dataset the task read (the model card lists them); None: read `dataset`."""
    after_write: Callable[[dict, str, Path], None] | None = None
    """(the suite's payload, task name, `<out>/<suite>` stem): files drawn from the result once it is written."""
    cost: Callable[[Any, dict, LoadedModel, Context], tuple[int, int]] | None = None
    """(settings, data, model, context) -> (tokens the task will generate, tokens it will score), printed with
    the time they take before the suite runs (`runner.log_cost`); None: a task too small to count."""
    details: Callable[[str, list[tuple[str, dict | None]]], str | None] | None = None
    """(task name, [(column label, the task's full result or None)]) -> a markdown block a report shows under the
    suite's table (e.g. each group's counts); None: nothing more than the rows."""
    seed_rows: tuple[SeedRow, ...] = ()
    """The numbers an experiment compares over seeds, in order (none: the kind is not in the seed-level table)."""
    seed_values: Callable[[dict, dict | None], dict[str, float]] | None = None
    """(a run's result, the teacher's result of the same task or None) -> a number per `seed_rows` key; None:
    read each key from the headline."""

    def row_text(self, row: Row, summaries: list[dict | None]) -> str:
        return self.row_label(row, summaries) if self.row_label is not None else row.label

    def values_for_seeds(self, result: dict, teacher: dict | None = None) -> dict[str, float]:
        """A number for every `seed_rows` key (NaN where the result has none)."""
        got = self.seed_values(result, teacher) if self.seed_values is not None else self.headline(result)
        out = {}
        for row in self.seed_rows:
            v = got.get(row.key)
            out[row.key] = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan
        return out


_KINDS: dict[str, MetricKind] = {}
_discovered = False


def register(kind: MetricKind) -> MetricKind:
    """Add a metric kind (a module of `metrics/` calls this at import); a second kind under one name is an error."""
    old = _KINDS.get(kind.name)
    if old is not None and old is not kind:
        raise ValueError(
            f"metric kind {kind.name!r} is registered twice ({old.run.__module__}, {kind.run.__module__})"
        )
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove a kind (tests that register a toy kind clean up with this)."""
    _KINDS.pop(name, None)


def kinds() -> dict[str, MetricKind]:
    """Every metric kind by name: the modules of `distill/evaluation/metrics/` first (imported once), then any kind
    registered since."""
    global _discovered
    if not _discovered:
        from distill.evaluation import metrics as package

        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
        _discovered = True
    return _KINDS


def kind(name: str) -> MetricKind:
    """The kind registered under `name` (a suite's tasks were validated against `kinds()` already)."""
    return kinds()[name]


def all_rows() -> dict[str, Row]:
    """Headline key -> its row, over every kind (the model card names each number by its row's label)."""
    return {row.key: row for k in kinds().values() for row in k.rows}


def all_hidden() -> set[str]:
    return {key for k in kinds().values() for key in k.hidden}


def from_hub(name: str, task: Any, field_name: str, load: Callable[[], Any]) -> Any:
    """Run a hub load; on failure, a DataError that names the suite field taking a local file."""
    try:
        return load()
    except DataError as e:
        cause = e.__cause__
        why = f"{type(cause).__name__}: {str(cause).splitlines()[0]}" if cause and str(cause) else str(e)
        raise DataError(
            f"task {name!r} ({task.metric}) loads its data from the Hugging Face hub, which failed ({why}). "
            f"Set `{name}.{field_name}` to a local copy: {kind(task.metric).local_hint}; as an override: "
            f"`distill eval CKPT --suite SUITE {name}.{field_name}=/path/to/file` "
            f'(make eval ... ARGS="{name}.{field_name}=/path/to/file"), or in the suite YAML'
        ) from e


def did_you_mean(value: str, options) -> str:
    """` (did you mean 'x'?)` for the closest of `options`, or nothing."""
    hint = difflib.get_close_matches(str(value), list(options), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def path_or_hub(name: str, task: Any, load: Callable[[], Any]) -> Any:
    """`load()` for a task whose `path` names a local copy; through `from_hub` (naming `path`) when it has none."""
    return load() if task.path else from_hub(name, task, "path", load)
