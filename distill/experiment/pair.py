"""A recipe and its baseline, as `distill run` (and so `make distill`) trains them: the baseline found beside the
recipe, each training in its own process (through `python -m distill.launch` under an accelerate config), and
where a run of the default falls against the five-seed results the README reports.

One run is one seed, and each kind of CPU samples its own transfer set under bf16, so a run's numbers are read
against the spread of the five seeds (`results/experiment_24L_names/seeds.json`: their mean, lowest and highest
value), not against another machine's seed 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from distill.core.config import Config
from distill.core.recipe import load_config
from distill.core.resources import resource_path
from distill.evaluation import results as R
from distill.experiment.verdicts import seed_values

DEFAULT = "recipes/smollm2-135m_to_24L.yaml"
DEFAULT_BASELINE = "recipes/smollm2-135m_to_24L_baseline.yaml"
SEEDS = "results/experiment_24L_names/seeds.json"
# (key in seeds.json and in a run's seed values, what it is)
ROWS = (
    ("slope_unseen", "stereotype size: slope on BLS % women (nats per 100 points), unseen occupations"),
    ("spread_unseen", "spread (nats), unseen occupations"),
    ("r_bls_unseen", "association r with BLS % women, unseen occupations"),
    ("agreement", "pronoun agreement (% correct, context decides the gender)"),
    ("agreement_margin", "pronoun agreement: mean margin (nats)"),
    ("ppl", "perplexity on the run's held-out blocks (val/ppl)"),
    ("realtext/ppl", "perplexity on real text (BOLD's Wikipedia sentences)"),
)
# (variant of the grid, the run's role)
PAIR = (("plain_kd", "baseline"), ("cda_mean_lr025_census", "method"))


def _recipe(cfg: Config) -> dict:
    """The parts of a recipe that decide what is trained (not its name, seed, folder, tracking or evaluation)."""
    d = cfg.to_dict()
    for k in ("run", "tracking", "eval"):
        d.pop(k, None)
    return d


def default_baseline(recipe: str) -> str | None:
    """`<recipe>_baseline.yaml` beside the recipe (as typed, when it resolves there), when there is one."""
    path = resource_path(recipe)
    if not path.is_file():
        path = resource_path(Path("recipes") / recipe)  # a shipped recipe's file name
    twin = path.with_name(f"{path.stem}_baseline{path.suffix}")
    if path.stem.endswith("_baseline") or not twin.is_file():
        return None
    as_typed = str(Path(recipe).with_name(twin.name))  # recipes/x.yaml -> recipes/x_baseline.yaml, as typed
    return as_typed if resource_path(as_typed).resolve() == twin.resolve() else str(twin)


def train_argv(
    recipe: str, overrides: list[str], launch: list[str] | None, verbose: bool = False
) -> list[str]:
    """One training as a child process: `python -m distill.cli train ...`, or, given accelerate launch options,
    `python -m distill.launch OPTIONS -- train ...` (which ends a failure with the child's message and status)."""
    import sys

    head = [sys.executable, "-m", "distill.cli"]
    if launch is not None:
        head = [sys.executable, "-m", "distill.launch", *launch, "--"]
    return [*head, *(["-v"] if verbose else []), "train", recipe, *overrides]


def run_child(argv: list[str], env: dict[str, str] | None = None) -> int:
    """Run one training and return its exit status (128 + N when signal N ended it). SIGTERM and SIGINT that reach
    this process while it waits are passed on to the training, which finishes its step, saves a checkpoint and
    exits 143 / 130, instead of ending this process and leaving the training behind; a second copy of the signal
    (Ctrl-C reaches the whole terminal group) changes nothing there."""
    import signal
    import subprocess

    child = subprocess.Popen(argv, env=env)

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = child.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def is_default_pair(method: Config, baseline: Config) -> bool:
    """Whether the pair trains what the shipped default and its baseline train, so the five seeds are theirs."""
    return _recipe(method) == _recipe(load_config(DEFAULT)) and _recipe(baseline) == _recipe(
        load_config(DEFAULT_BASELINE)
    )


def _fmt(x: float) -> str:
    return "n/a" if not isinstance(x, int | float) or not math.isfinite(x) else f"{x:.3g}"


def _label(run: Path, role: str) -> str:
    """The run's method as a table names it (`method_label`), or its role when its recipe cannot be read."""
    from distill.core.config import method_label
    from distill.core.rundir import RunDir

    try:
        return method_label(RunDir(run).recipe())
    except Exception:  # noqa: BLE001 - a label is never worth failing the report for
        return "plain KD" if role == "baseline" else "method"


def against_seeds(method_run: Path, baseline_run: Path, suite: str, seeds: str = SEEDS) -> str:
    """Markdown lines: each headline number of the two runs beside the five seeds' mean and range; "" when the
    seed file is not there (an installed wheel ships no results/) or the runs lack the numbers."""
    path = resource_path(seeds)
    if not path.is_file():
        return ""
    grid = json.loads(path.read_text())
    runs = {"method": Path(method_run), "baseline": Path(baseline_run)}
    values = {
        role: seed_values(run, suite, R.teacher_results(runs["method"], suite)) for role, run in runs.items()
    }
    labels = {role: _label(run, role) for role, run in runs.items()}
    lines = [
        f"## This run against five seeds ({seeds.replace('.json', '.md')})",
        "",
        "One run is one seed; under bf16 each kind of CPU samples its own transfer set. Each cell: this run, then "
        "the five seeds' mean and [lowest, highest].",
        "",
        f"| metric | {labels['baseline']} | {labels['method']} |",
        "|---|---|---|",
    ]
    shown = 0
    for key, label in ROWS:
        cells = []
        for variant, role in PAIR:
            ref = ((grid.get("variants") or {}).get(variant) or {}).get("metrics", {}).get(key) or {}
            got = values[role].get(key, math.nan)
            xs = [x for x in ref.get("seeds") or [] if isinstance(x, int | float)]
            span = f"{_fmt(min(xs))}, {_fmt(max(xs))}" if xs else "n/a"
            cells.append(f"{_fmt(got)} (five seeds: {_fmt(ref.get('mean', math.nan))} [{span}])")
            shown += isinstance(got, int | float) and math.isfinite(got)
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n" if shown else ""
