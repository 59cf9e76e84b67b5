"""Running a grid: every variant x seed that has no `final/` yet is trained (a stopped grid resumes where it
stopped, each run from its own checkpoints), each student and the teacher once are evaluated with the suite, and
`summary.summarise` writes `results/`."""

from __future__ import annotations

import logging
from pathlib import Path

from distill.evaluation import results as R
from distill.experiment.grid import Grid, run_name, teacher_result, variant_overrides
from distill.experiment.summary import summarise

log = logging.getLogger(__name__)


def run_grid(grid: Grid) -> Path:
    """Train and evaluate everything missing; then summarise. Returns the results folder."""
    from distill.core.cpu_heap import release_free_memory
    from distill.core.recipe import load_config
    from distill.reporting.evaluate import evaluate_checkpoint, evaluate_run
    from distill.training.loop import train

    # Validate every variant before the first run starts, so a typo in the last one costs nothing.
    cfgs = {
        (v, s): load_config(grid.base, variant_overrides(grid, v, s))
        for s in grid.seeds  # seed by seed, so a grid stopped early already holds paired seeds
        for v in grid.variants
    }
    root = Path(grid.output_dir)
    teacher_done = False
    for (variant, seed), cfg in cfgs.items():
        run = root / run_name(variant, seed)
        if not (R.final_dir(run) / "config.json").is_file():
            log.info("experiment: training %s (seed %d)", variant, seed)
            train(cfg)
        if not R.student_results(run, grid.suite).is_file():
            if not teacher_done and not teacher_result(grid).is_file():
                evaluate_run(run, grid.suite, grid.suite_overrides)
            else:
                evaluate_checkpoint(run, grid.suite, overrides=grid.suite_overrides)
        teacher_done = teacher_done or teacher_result(grid).is_file()
        release_free_memory()  # the next run starts from live memory, not from this one's free blocks
    if not teacher_result(grid).is_file():
        first = root / run_name(next(iter(grid.variants)), grid.seeds[0])
        evaluate_run(first, grid.suite, grid.suite_overrides)
    return summarise(grid)
