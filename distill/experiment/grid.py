"""An experiment grid (`recipes/experiments/*.yaml`): a base recipe, the variants (override lists), the seeds and
the evaluation suite, checked as recipes are; each run's name and overrides; archiving finished runs.

`runs.run_grid` trains and evaluates a grid, `summary.summarise` writes its results."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from distill.core.errors import ConfigError
from distill.core.sections import build_section
from distill.evaluation import results as R

log = logging.getLogger(__name__)


@dataclass
class Grid:
    base: str = ""
    """The recipe every variant starts from (required)."""
    variants: dict[str, list[str]] = field(default_factory=dict)
    """Variant name -> overrides applied on top of `common` (required)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    """Training seeds (run.seed)."""
    data_seed: Literal["fixed", "per_seed"] = "fixed"
    """`fixed`: every seed trains on the same transfer set and validation split (data.seed 0), so seeds differ only
    in batch order; `per_seed`: each seed draws its own (data.seed = run.seed), a replicate of the whole pipeline."""
    suite: str = "quick"
    """Evaluation suite for the teacher and every student."""
    suite_overrides: list[str] = field(default_factory=list)
    """key=value overrides of the suite (e.g. n_per_prompt=2)."""
    common: list[str] = field(default_factory=list)
    """Overrides shared by every variant (token budget, logging)."""
    output_dir: str = "runs/experiment"
    """Where the runs go (one folder per variant and seed)."""
    results_dir: str = "results"
    """Where the table, plots and commands go."""
    reference: str = "plain_kd"
    """The variant every other one is compared with."""
    source: str = field(default="", metadata={"internal": True})
    """The grid file it was read from."""


def load_grid(path: str | Path) -> Grid:
    """The grid at `path`, every problem found (unknown keys, types, a missing base or variants, a reference that
    is not a variant) raised at once as a `ConfigError`, as recipes and suites are checked."""
    from distill.core.resources import resource_path

    p = resource_path(path)
    if not p.is_file():
        raise ConfigError(f"experiment grid not found: {path}")
    data = yaml.safe_load(p.read_text()) or {}
    problems: list[str] = []
    grid = build_section(Grid, data, "", problems)
    for k in ("base", "variants"):
        if isinstance(data, dict) and k not in data:
            problems.append(f"{k} is required")
    variants = grid.variants if isinstance(grid.variants, dict) else {}
    if not all(isinstance(v, list) for v in variants.values()):
        problems.append("variants must map each name to a list of key=value overrides")
    elif variants and grid.reference not in variants:
        problems.append(f"reference {grid.reference!r} is not one of the variants {list(variants)}")
    if problems:
        raise ConfigError(problems, str(path))
    grid.source = str(path)
    return grid


# What `archive_runs` keeps of a finished run: enough to summarise it again and to let a later `run_grid` skip it
# (final/config.json marks it trained, eval/ holds its scores), without the weights or checkpoints.
ARCHIVED = (
    "config.yaml",
    "metrics.jsonl",
    "probe.json",
    "prune.json",
    "final/config.json",
    "final/README.md",
    "eval/**/*.json",
    "eval/**/*.jsonl",
    "eval/**/*.md",
)


def archive_runs(grid: Grid, dest: Path) -> list[str]:
    """Copy the small files of every evaluated run of the grid (`ARCHIVED`, a few hundred kB a run) to
    dest/<run>/: a results folder can carry them, `--summarise-only --output-dir dest` rebuilds its tables from
    them, and copied back under the grid's output_dir they make `run_grid` train only what is missing. Returns
    the runs archived."""
    import shutil

    done = []
    for v in grid.variants:
        for seed in grid.seeds:
            run = Path(grid.output_dir) / run_name(v, seed)
            if not R.student_results(run, grid.suite).is_file():
                continue
            for pattern in ARCHIVED:
                for f in run.glob(pattern):
                    if f.is_file() and "checkpoints" not in f.parts:
                        target = Path(dest) / run.name / f.relative_to(run)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(f, target)
            done.append(run.name)
    return done


def run_name(variant: str, seed: int) -> str:
    return f"{variant}_s{seed}"


def variant_overrides(grid: Grid, variant: str, seed: int) -> list[str]:
    return [
        *grid.common,
        *grid.variants[variant],
        f"run.seed={seed}",
        "data.seed=0" if grid.data_seed == "fixed" else f"data.seed={seed}",
        f"run.name={run_name(variant, seed)}",
        f"run.output_dir={grid.output_dir}",
        "eval.suite=null",
    ]


def teacher_result(grid: Grid) -> Path:
    for v in grid.variants:
        for s in grid.seeds:
            p = R.teacher_results(Path(grid.output_dir) / run_name(v, s), grid.suite)
            if p.is_file():
                return p
    return Path(grid.output_dir) / "missing-teacher.json"


def variant_label(grid: Grid, variant: str) -> str:
    """The method's name of a variant ("plain KD", "CDA + mean"), from its recipe as the grid builds it."""
    from distill.core.config import method_label
    from distill.core.recipe import load_config

    return method_label(load_config(grid.base, [*grid.common, *grid.variants[variant]]))
