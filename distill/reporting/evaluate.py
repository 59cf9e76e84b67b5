"""Evaluate a checkpoint or a run and write what it shows: the suite's results (`evaluation.runner`), then the
model card's section, the run's W&B run and figures, and the teacher-vs-student comparison table.

    evaluate_checkpoint("runs/smollm2-135m_to_24L", "quick")   # the run's student; reference = the run's teacher
    evaluate_run("runs/smollm2-135m_to_24L", "quick")          # teacher and student, side by side
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from distill.core.config import method_label
from distill.core.errors import ModelError
from distill.core.files import read_jsonl
from distill.core.ownership import RunLock
from distill.core.rundir import RunDir
from distill.core.tracking import log_evaluation
from distill.evaluation import results as R
from distill.evaluation import runner
from distill.evaluation import suites as S
from distill.reporting.card_evaluation import merge_evaluation
from distill.reporting.figures import run_figures
from distill.reporting.tables import suite_table

log = logging.getLogger(__name__)


def evaluate_checkpoint(
    ckpt: str | Path,
    suite: str | Path,
    out_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    reference: str | None = None,
) -> dict:
    """Evaluate one checkpoint on one suite; returns the results as written to `<out_dir>/<suite>.json`.

    `ckpt`: a run directory (evaluates `<run>/final`), a `final/` folder, a `save_pretrained` folder, a hub id,
    or `embedded:smollm2-135m`. `suite`: a name in `eval/` (`quick`) or a YAML path. `out_dir` defaults to
    `<run>/eval` (see `Checkpoint.default_out`). `overrides`: `key=value` strings (`n_per_prompt=1`,
    `templates.max_new_tokens=4`, `device=cpu`). `reference` overrides the suite's fluency reference (a model
    folder, hub id, `embedded:...`, `teacher` or `none`). A run's teacher is loaded when a task compares the
    student with it (Winogender's `r_teacher`), as `evaluate_run` has it.
    """
    spec = S.load_suite(suite, overrides)
    ck = runner.resolve_checkpoint(ckpt)
    out = Path(out_dir) if out_dir is not None else ck.default_out()
    runner.check_out_dir(out)
    with _owning(ck.run_dir):  # its card, eval/ and W&B run are the run's: one writer at a time
        return _evaluate_checkpoint(spec, ck, out, reference)


@contextlib.contextmanager
def _owning(run_dir: Path | None):
    """The run folder's lock (`core.ownership.RunLock`) while an evaluation writes into it; nothing outside a run."""
    if run_dir is None:
        yield
        return
    with RunLock(RunDir(run_dir)):
        yield


def _evaluate_checkpoint(spec: S.Suite, ck: runner.Checkpoint, out: Path, reference: str | None) -> dict:
    device = runner.device_for(spec.device)
    runner.set_cpu_heap(device)
    data = runner.prepare_tasks(spec)
    run_cfg = runner.run_config(ck.run_dir) if ck.run_dir is not None else None
    teacher_name = run_cfg.teacher.name_or_path if run_cfg is not None else None
    lm = runner.load_model(
        ck, device, role="student" if ck.run_dir is not None else "model", teacher=teacher_name
    )
    if run_cfg is not None:
        lm.info["method"] = method_label(run_cfg)
    ref = reference if reference is not None else spec.reference
    ctx = runner.build_context(spec, device, run_cfg, ck.run_dir, ref)
    results = runner.evaluate_model(lm, spec, data, ctx, out)
    teacher = R.read_if_present(R.teacher_results(ck.run_dir, spec.name)) if ck.run_dir else None
    if Path(ck.path).is_dir():
        update_model_card(Path(ck.path), spec.name, results, teacher)
    if ck.run_dir is not None and out == ck.default_out():
        log_to_run(ck.run_dir, spec.name, results, teacher.payload if teacher else None)
    return results


def update_model_card(
    model_dir: Path, suite: str, results: dict, teacher_results: dict | R.SuiteResult | None = None
) -> None:
    """Merge the suite's numbers into the model card next to the weights (`card.merge_evaluation`): teacher and
    this model side by side, in a section a later evaluation with the same suite replaces."""
    merge_evaluation(model_dir, suite, results, teacher_results)


def cards_side_by_side(run_dirs: list[Path], suite: str) -> None:
    """Each run's model card gets the suite's section with the teacher, the other runs' students (named by their
    methods) and its own student side by side: what `distill compare` leaves in the default's and its baseline's
    cards. Runs without the suite's results are left out."""
    loaded = []
    for run in run_dirs:
        mine = R.read_if_present(R.student_results(run, suite))
        if mine is not None:
            loaded.append((Path(run), mine, method_label(runner.run_config(run))))
    for run, mine, _ in loaded:
        teacher = R.read_if_present(R.teacher_results(run, suite))
        others = [(label, res) for other, res, label in loaded if other != run]
        merge_evaluation(R.final_dir(run), suite, mine, teacher, others)


def log_to_run(run_dir: Path, suite: str, student: dict, teacher: dict | None) -> None:
    """Figures of the run's teacher and student (`<run>/eval/figures/`) and the results, logged into the run's own
    W&B run (`tracking.log_evaluation`)."""
    figures = run_figures(run_dir, suite)
    gen = R.generations_file(R.eval_dir(run_dir), suite)
    generations = read_jsonl(gen) if gen.is_file() else []
    cfg = runner.run_config(run_dir)
    mode = cfg.tracking.mode if cfg.tracking.wandb else "disabled"
    log_evaluation(run_dir, suite, student, teacher, generations, figures, mode=mode)


def evaluated_since_training(run_dir: str | Path, suite: str | Path) -> Path | None:
    """`<run>/eval/<suite>_comparison.md` when `evaluate_run` wrote it after the run's `final/` model, else None."""
    done = R.comparison_file(run_dir, Path(str(suite)).stem)
    final = R.final_dir(run_dir) / "config.json"
    if done.is_file() and final.is_file() and done.stat().st_mtime >= final.stat().st_mtime:
        return done
    return None


def evaluate_run(run_dir: str | Path, suite: str | Path, overrides: list[str] | None = None) -> str:
    """Evaluate a run's teacher and its student (`final/`) on `suite`; return a markdown table of the two side by
    side (also written to `<run>/eval/<suite>_comparison.md`).

    Results: `<run>/eval/<suite>.json` (student) and `<run>/eval/teacher/<suite>.json`. The teacher is loaded
    once and is the fluency reference for both (unless the suite names another). Under a multi-process launch
    only the main process evaluates; the others return an empty string.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        return ""
    spec = S.load_suite(suite, overrides)
    ck = runner.resolve_checkpoint(Path(run_dir))
    if ck.run_dir is None:
        raise ModelError(f"{str(run_dir)!r} is not a run directory (no config.yaml); use evaluate_checkpoint")
    with _owning(ck.run_dir):
        return _evaluate_run(spec, ck)


def _evaluate_run(spec: S.Suite, ck: runner.Checkpoint) -> str:
    run = ck.run_dir
    device = runner.device_for(spec.device)
    runner.set_cpu_heap(device)
    data = runner.prepare_tasks(spec)
    cfg = runner.run_config(run)
    teacher = runner.load_run_teacher(cfg, device, run)
    ctx = runner.build_context(spec, device, cfg, run, spec.reference, teacher=teacher)
    teacher_results = runner.evaluate_model(teacher, spec, data, ctx, R.teacher_dir(run))
    student = runner.load_model(ck, device, role="student", teacher=cfg.teacher.name_or_path)
    student.info["method"] = method_label(cfg)
    student_results = runner.evaluate_model(student, spec, data, ctx, R.eval_dir(run))
    update_model_card(Path(ck.path), spec.name, student_results, teacher_results)
    log_to_run(run, spec.name, student_results, teacher_results)
    table = suite_table(
        [("teacher", teacher_results), (f"student ({student.info['label']})", student_results)]
    )
    text = f"{spec.name} suite, {run}: teacher vs student\n\n{table}\n"
    path = R.comparison_file(run, spec.name)
    path.write_text(text)
    log.info("%s suite: teacher vs student in %s", spec.name, path)  # the caller prints the table itself
    return text
