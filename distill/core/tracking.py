"""Where numbers go: `metrics.jsonl` in the run directory and Weights & Biases (through Accelerate's tracker).

W&B runs offline unless a key is present (`mode: auto`); an offline run directory is uploaded later with
`wandb sync <run_dir>/wandb/offline-run-*`. Keys are never written to logs, saved configs or the W&B config.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from distill.core.files import atomic_write, read_jsonl
from distill.core.rundir import RunDir

_SECRET_KEY = re.compile(r"(^|[_-])(api[_-]?key|key|token|secret|password|passwd)$", re.IGNORECASE)


def redact(obj: Any) -> Any:
    """Replace values of secret-looking keys with '***' (recursively)."""
    if isinstance(obj, dict):
        return {k: ("***" if _SECRET_KEY.search(str(k)) and v else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def wandb_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


class MetricsLog:
    """Append-only `metrics.jsonl`; on resume, lines past the resumed step are dropped so no step appears twice."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if rec.get("step", 0) <= resume_step:
                    kept.append(line)
            atomic_write(self.path, "".join(k + "\n" for k in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        rec = {"step": step}
        for k, v in metrics.items():
            if isinstance(v, float) and not math.isfinite(v):
                v = str(v)
            rec[k] = v
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()


# --------------------------------------------------------------------------------------------------------------
# The run's one W&B run: every launch, resume and evaluation of a run directory logs into the same run id.

# `<run>/wandb/run_id` (`RunDir.wandb_id`) holds the W&B run id, written when the run directory is first used, so a
# restart before the first checkpoint, a resume and a later `distill eval` all continue the same W&B run.


_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def wandb_run_id(run_dir: str | Path, create: bool = True, adopt: str | None = None) -> str | None:
    """The W&B run id of a run directory: read from `<run>/wandb/run_id`; else `adopt` (the id an older version kept
    in its checkpoints) or a new one (8 random lowercase letters and digits, W&B's own form), written atomically.
    None when there is none and `create` is false."""
    path = RunDir(run_dir).wandb_id
    if path.is_file():
        text = path.read_text(encoding="utf-8").strip()
        if _RUN_ID.fullmatch(text):
            return text
    if not create:
        return None
    import secrets
    import string

    alphabet = string.ascii_lowercase + string.digits
    run_id = (
        adopt if adopt and _RUN_ID.fullmatch(adopt) else "".join(secrets.choice(alphabet) for _ in range(8))
    )
    atomic_write(path, run_id + "\n")
    return run_id


def wandb_init_kwargs(run_dir: str | Path, name: str, tags: list[str], run_id: str) -> dict[str, Any]:
    """`wandb.init` arguments that attach to the run directory's W&B run (`resume="allow"`: created the first
    time, continued after). Offline, each launch writes its own `offline-run-*-<id>` folder; `wandb sync` uploads
    the folders of one id into one run, in order of start time."""
    # reinit: a run another call left open in this process is finished, never handed back in place of this one
    return {
        "name": name,
        "tags": list(tags),
        "dir": str(run_dir),
        "id": run_id,
        "resume": "allow",
        "reinit": "finish_previous",
    }


def active_wandb_run(run_id: str):
    """The W&B run open in this process if it is `run_id`, else None."""
    try:
        import wandb
    except ImportError:
        return None
    run = wandb.run
    return run if run is not None and run.id == run_id else None


def finish_trackers(accelerator, keep_wandb: bool) -> None:
    """`accelerator.end_training()`, except that with `keep_wandb` the W&B run stays open for the evaluation that
    follows in the same process (`log_evaluation` finishes it)."""
    for tracker in accelerator.trackers:
        if keep_wandb and tracker.name == "wandb":
            continue
        tracker.finish()
    accelerator.state.destroy_process_group()


def _flat_summary(prefix: str, summary: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for task, values in summary.items():
        for k, v in (values or {}).items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            out[f"{prefix}/{task}/{k}"] = v
    return out


def evaluation_payload(
    suite: str, student: dict, teacher: dict | None, generations: list[dict], figures: list[Path]
) -> tuple[dict[str, float], dict[str, Any]]:
    """(summary values, logged objects) of one evaluation for W&B: `eval/<suite>/<task>/<key>` for the student
    and `eval_teacher/<suite>/...` for the teacher; a table of every generated continuation with its gender label;
    the per-profession probe table; the figures."""
    import wandb

    summary = _flat_summary(f"eval/{suite}", student.get("summary", {}))
    if teacher:
        summary.update(_flat_summary(f"eval_teacher/{suite}", teacher.get("summary", {})))
    logged: dict[str, Any] = {}
    if generations:
        cols = [
            "task",
            "group",
            "prompt",
            "continuation",
            "gender",
            "male_words",
            "female_words",
            "sentiment",
        ]
        table = wandb.Table(columns=cols)
        for g in generations:
            table.add_data(*[g.get(c) for c in cols])
        logged[f"eval/{suite}/generations"] = table
    for name, t in student.get("tasks", {}).items():
        if t.get("metric") != "pronoun_probe":
            continue
        mine = t["result"].get("per_profession") or {}
        theirs = ((teacher or {}).get("tasks", {}).get(name, {}).get("result") or {}).get(
            "per_profession"
        ) or {}
        table = wandb.Table(columns=["profession", "teacher_he_minus_she", "student_he_minus_she"])
        for p, v in mine.items():
            table.add_data(p, theirs.get(p), v)
        logged[f"eval/{suite}/{name}/per_profession"] = table
    for f in figures:
        logged[f"eval/{suite}/figures/{f.stem}"] = wandb.Image(str(f))
    return summary, logged


def log_evaluation(
    run_dir: str | Path,
    suite: str,
    student: dict,
    teacher: dict | None,
    generations: list[dict],
    figures: list[Path],
    mode: str = "auto",
) -> str | None:
    """Log an evaluation of a run's student into the run's own W&B run (the one its training opened, still open in
    this process or continued by id) and finish it. Returns the run id, or None when the run never used W&B or W&B
    is disabled. A W&B failure is logged and never fatal: the JSON results are complete without it."""
    import logging

    log = logging.getLogger(__name__)
    run = RunDir(run_dir)
    run_id = wandb_run_id(run.path, create=False)
    if mode != "disabled":
        mode = os.environ.get("WANDB_MODE") or wandb_mode(mode)
    if run_id is None or mode == "disabled":
        return None
    try:
        import wandb

        from distill.core.recipe import load_config

        step = max((r.get("step", 0) for r in read_jsonl(run.metrics)), default=0)
        wb = active_wandb_run(run_id)
        if wb is None:
            cfg = load_config(run.config)
            wb = wandb.init(
                project=cfg.tracking.project,
                mode=mode,
                **wandb_init_kwargs(run.path, cfg.run.name, cfg.tracking.tags, run_id),
            )
        summary, logged = evaluation_payload(suite, student, teacher, generations, figures)
        for k, v in summary.items():
            wb.summary[k] = v
        if logged:
            # at the run's last training step: W&B keeps a run's steps increasing, also across resumed folders
            wb.log(logged, step=max(step, wb.step))
        wb.finish()
        return run_id
    except Exception as e:
        log.warning(
            "W&B logging of the %s evaluation failed (%s: %s); the JSON results are complete",
            suite,
            type(e).__name__,
            e,
        )
        return None
