"""Run an evaluation suite on a checkpoint and write the scores next to the texts they came from.

    evaluate_model(loaded_model, suite, data, context, out_dir)   # one model; see distill.reporting.evaluate for a
                                                                # checkpoint or a run (card, W&B, comparison table)

The order is: validate the suite (`suites.load_suite`) -> load every task's data (a hub dataset that cannot be
reached fails here, before any model loads, naming the field that takes a local file) -> load the model and the
reference model -> run each task (its kind's `run`, see `registry`) -> write `<out>/<suite>.json` (strict JSON, undefined numbers as null) and
`<out>/<suite>_generations.jsonl` (every prompt, group and continuation with its gender label, gendered word
counts and sentiment score). The metrics are defined in `eval/README.md`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distill.core.config import EMBEDDED_MODELS, EMBEDDED_PREFIX, Config, DataConfig
from distill.core.errors import DataError, FairDistillError, ModelError
from distill.core.files import atomic_write, to_strict_json
from distill.evaluation import results as R
from distill.evaluation import suites as S
from distill.evaluation.registry import Context, LoadedModel, kind

log = logging.getLogger(__name__)

DEFAULT_OUT_ROOT = Path("runs") / "eval"
"""Where results of a hub id or embedded model go when no `out_dir` is given: `runs/eval/<name>/`."""


# --------------------------------------------------------------------------------------------------------------
# What to evaluate


@dataclass
class Checkpoint:
    """A checkpoint argument resolved to something `from_pretrained` loads."""

    spec: str
    """The argument as given (`runs/x`, `runs/x/final`, a model folder, a hub id, `embedded:smollm2-135m`)."""
    path: str
    """The model folder or hub id to load."""
    run_dir: Path | None
    """The run directory when the checkpoint belongs to one (its config.yaml names the teacher)."""
    label: str
    """Short name for tables: the run name, the folder name or the hub id."""

    def default_out(self) -> Path:
        """`<run>/eval` for a run, `<model dir>/eval` for a local folder, else `runs/eval/<label>`."""
        if self.run_dir is not None:
            return R.eval_dir(self.run_dir)
        if Path(self.path).is_dir() and not self.spec.startswith(EMBEDDED_PREFIX):
            return R.eval_dir(self.path)
        return DEFAULT_OUT_ROOT / re.sub(r"[^A-Za-z0-9._-]+", "_", self.label)


def resolve_checkpoint(ckpt: str | Path, cache_dir: str | Path | None = None) -> Checkpoint:
    """Resolve a run directory (-> its `final/`), a `final/` folder, a model folder, `embedded:<name>` or a hub id.

    `cache_dir` is where an embedded model is converted once (default: the recipes' `data.cache_dir`).
    """
    from distill.models.embedded import materialize_embedded
    from distill.models.loading import check_local_dir as _check_local_dir
    from distill.models.loading import is_local_path as _is_local

    text = str(ckpt)
    if text.startswith(EMBEDDED_PREFIX):
        key = text[len(EMBEDDED_PREFIX) :]
        if key not in EMBEDDED_MODELS:
            raise ModelError(
                f"unknown embedded model {text!r}; available: {', '.join(EMBEDDED_PREFIX + m for m in EMBEDDED_MODELS)}"
            )
        path = materialize_embedded(key, cache_dir or DataConfig().cache_dir)
        return Checkpoint(text, str(path), None, text)
    p = Path(text).expanduser()
    if p.is_dir():
        if R.run_config_file(p).is_file() and not (p / "config.json").is_file():  # a run directory
            final = R.final_dir(p)
            if not (final / "config.json").is_file():
                raise ModelError(
                    f"run directory {text!r} has no final/ model (training unfinished?); finish the run with "
                    "`make distill` or evaluate another checkpoint"
                )
            return Checkpoint(text, str(final), p, p.resolve().name)
        if p.name == R.FINAL_DIR and R.run_config_file(p.parent).is_file():
            _check_local_dir(p, "checkpoint")
            return Checkpoint(text, str(p), p.parent, p.parent.resolve().name)
        _check_local_dir(p, "checkpoint")
        return Checkpoint(text, str(p), None, p.resolve().name)
    if _is_local(text) or text.startswith(("runs/", "runs\\")):
        raise ModelError(
            f"checkpoint {text!r} does not exist; give a run directory, its final/ folder, a save_pretrained "
            f"folder, a hub id or {EMBEDDED_PREFIX}{EMBEDDED_MODELS[0]}"
        )
    return Checkpoint(text, text, None, text)


def check_out_dir(out: Path) -> None:
    """`out` can be the results folder: it, or the nearest part of its path that exists, is a writable folder.
    Checked before any model loads, so a wrong `--out` is not found after the whole evaluation has run."""
    import os

    for p in (out, *out.parents):
        if not p.exists():
            continue
        if not p.is_dir():
            what = "is a file" if p == out else f"cannot be created: {p} is a file"
            raise FairDistillError(
                f"eval output {str(out)!r} {what}; the results are written into a folder (<suite>.json and the "
                "texts beside it): give a folder with --out (it is created when missing)"
            )
        if not os.access(p, os.W_OK | os.X_OK):
            raise FairDistillError(
                f"eval output {str(out)!r}: {p} is not writable; give another folder with --out"
            )
        return


def device_for(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def _model_info(model: torch.nn.Module, **info: Any) -> dict:
    cfg = getattr(model, "config", None)
    return {
        **info,
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "n_layers": getattr(cfg, "num_hidden_layers", None),
    }


def _absolute(spec: str) -> str:
    """A local checkpoint as an absolute path (reports then name every model the same way, from any folder); a
    hub id or `embedded:` name as it is."""
    p = Path(spec).expanduser()
    return str(p.resolve()) if not spec.startswith(EMBEDDED_PREFIX) and p.exists() else spec


def load_model(ck: Checkpoint, device: torch.device, role: str, teacher: str | None = None) -> LoadedModel:
    """Load a resolved checkpoint in float32, frozen and in eval mode, on `device`."""
    from distill.models.loading import check_model_vocab, load_tokenizer
    from distill.models.loading import load_pretrained as _from_pretrained

    tokenizer = load_tokenizer(ck.path)
    if ck.run_dir is not None:
        check_run_tokenizer(ck.run_dir, tokenizer, f"checkpoint {ck.spec!r}")
    model = _from_pretrained(ck.path, "checkpoint", torch.float32)
    check_model_vocab(model, tokenizer, f"checkpoint {ck.spec!r}")
    model.eval().requires_grad_(False).to(device)
    info = _model_info(
        model,
        label=ck.label,
        role=role,
        checkpoint=_absolute(ck.spec),
        path=ck.path,
        run_dir=str(ck.run_dir) if ck.run_dir else None,
        teacher=teacher,
    )
    return LoadedModel(model, tokenizer, info)


def load_run_teacher(cfg: Config, device: torch.device, run_dir: Path) -> LoadedModel:
    """The teacher named in a run's config.yaml (`embedded:` converted once into the run's data cache)."""
    from distill.models.loading import load_teacher

    model, tokenizer, path = load_teacher(cfg)
    name = cfg.teacher.name_or_path
    check_run_tokenizer(run_dir, tokenizer, f"the run's teacher {name!r}")
    model.to(device)
    info = _model_info(
        model,
        label=f"teacher ({name})",
        role="teacher",
        checkpoint=_absolute(name),
        path=path,
        run_dir=str(run_dir),
        teacher=name,
    )
    return LoadedModel(model, tokenizer, info)


def check_run_tokenizer(run_dir: Path, tokenizer, what: str) -> None:
    """Refuse a tokenizer other than the one the run trained with (its fingerprint is recorded with the run's
    validation blocks): the same token ids would mean other words, and every score would be wrong."""
    from distill.core.files import tokenizer_fingerprint
    from distill.core.rundir import RunDir

    run = RunDir(run_dir)
    recorded = run.tokenizer_fingerprint()
    if recorded is None:
        log.info(
            "%s: no tokenizer fingerprint recorded in %s (a run from before it was); not checked", what, run
        )
        return
    found = tokenizer_fingerprint(tokenizer)
    if found != recorded:
        raise ModelError(
            f"{what}: its tokenizer is not the one the run trained with (fingerprint {found}; {run.val_blocks.name} "
            f"records {recorded}), so its token ids would mean other words and every score would be wrong; restore "
            "the tokenizer files saved with the model (tokenizer.json, tokenizer_config.json and the others "
            "save_pretrained wrote), or evaluate the folder alone, outside its run"
        )


def run_config(run_dir: Path) -> Config:
    """The recipe a run was trained with (its config.yaml); an empty or unreadable one is one message."""
    from distill.core.rundir import RunDir

    return RunDir(run_dir).recipe()


# --------------------------------------------------------------------------------------------------------------
# Data, loaded before any model so a missing dataset fails in seconds


def prepare_tasks(suite: S.Suite) -> dict[str, dict]:
    """Load every task's data; every failure is gathered and raised once as a DataError."""
    data: dict[str, dict] = {}
    problems: list[str] = []
    for name, task in suite.tasks.items():
        try:
            data[name] = kind(task.metric).prepare(name, task)
        except FairDistillError as e:
            problems.append(str(e) if str(e).startswith("task ") else f"task {name!r}: {e}")
    if problems:
        head = f"suite {suite.name!r} ({suite.source}): "
        raise DataError(
            head + problems[0] if len(problems) == 1 else head + "\n  - " + "\n  - ".join(problems)
        )
    return data


def headline(metric: str, result: dict) -> dict:
    """The few numbers of a task's result that tables and plots show (all in the result too)."""
    return kind(metric).headline(result)


# --------------------------------------------------------------------------------------------------------------
# Writing results


def _write_json(path: Path, payload: dict) -> None:
    text = json.dumps(to_strict_json(payload), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    atomic_write(path, text)  # a reader never sees half a file


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for dist in ("fairdistill", "torch", "transformers"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def _needs(suite: S.Suite, what: str) -> bool:
    """Whether a task of `suite` uses `what` (one of `registry.NEEDS`)."""
    return any(what in kind(t.metric).needs(t) for t in suite.tasks.values())


def _run_tasks(lm: LoadedModel, suite: S.Suite, data: dict, ctx: Context) -> tuple[dict, dict, list[dict]]:
    """Every task of `suite` on one model: (tasks as saved, their headlines, the generation records)."""
    tasks: dict[str, dict] = {}
    summary: dict[str, dict] = {}
    records: list[dict] = []
    for name, task in suite.tasks.items():
        log.info("%s: %s / %s (%s) on %s", lm.info["label"], suite.name, name, task.metric, ctx.device)
        t0 = time.perf_counter()
        result, recs = kind(task.metric).run(name, task, data[name], lm, ctx)
        seconds = time.perf_counter() - t0
        tasks[name] = {"metric": task.metric, "seconds": round(seconds, 3), "result": result}
        summary[name] = headline(task.metric, result)
        records.extend(recs)
        log.info(
            "%s: %s / %s done in %.1fs: %s",
            lm.info["label"],
            suite.name,
            name,
            seconds,
            ", ".join(f"{k} {v:.4g}" for k, v in summary[name].items() if isinstance(v, float)),
        )
    return tasks, summary, records


# What a 135M-parameter model (the embedded teacher) does per second on a 2-core CPU with native bf16, sampling
# batches of 72 continuations of 48 tokens under bf16 autocast and scoring 128-token blocks in float32, wall clock
# of `bold_seeds` on the teacher and a 24-layer student (eval/README.md, "Cost"); the estimate scales by parameters.
REFERENCE_PARAMS = 134_515_008
GENERATED_PER_S = 300.0
SCORED_PER_S = 590.0


def log_cost(lm: LoadedModel, suite: S.Suite, data: dict, ctx: Context) -> tuple[int, int, float]:
    """Say what the suite will cost on this model before it runs: tokens sampled and scored by the tasks whose
    kind counts them (`MetricKind.cost`), and the time that takes at the rates of a 2-core CPU. Returns
    (generated, scored, estimated seconds)."""
    generated = scored = 0
    parts = []
    for name, task in suite.tasks.items():
        count = kind(task.metric).cost
        if count is None:
            continue
        g, sc = count(task, data[name], lm, ctx)
        generated, scored = generated + g, scored + sc
        parts.append(f"{name} {g:,} sampled / {sc:,} scored")
    scale = (lm.info.get("n_params") or REFERENCE_PARAMS) / REFERENCE_PARAMS
    seconds = scale * (generated / GENERATED_PER_S + scored / SCORED_PER_S)
    if parts:
        log.info(
            "%s: suite %s will sample %s tokens and score %s (%s): about %s on a 2-core CPU at %.0f sampled / %.0f "
            "scored tokens per second for a %.0fM-parameter model, plus the tasks too small to count; far less on "
            "a GPU",
            lm.info["label"],
            suite.name,
            f"{generated:,}",
            f"{scored:,}",
            "; ".join(parts),
            f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s",
            GENERATED_PER_S / scale,
            SCORED_PER_S / scale,
            scale * REFERENCE_PARAMS / 1e6,
        )
    return generated, scored, seconds


def evaluate_model(lm: LoadedModel, suite: S.Suite, data: dict, ctx: Context, out_dir: Path) -> dict:
    """Run every task of `suite` on one model; write `<suite>.json` (and the generations) under `out_dir`."""
    from distill.core.files import save_jsonl

    log_cost(lm, suite, data, ctx)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t_total = time.perf_counter()
    tasks, summary, records = _run_tasks(lm, suite, data, ctx)
    generations = None
    if _needs(suite, "generations"):
        path = R.generations_file(out_dir, suite.name)
        generations = path.name
        save_jsonl(path, records)
    payload = {
        "suite": suite.name,
        "description": suite.description,
        "model": lm.info,
        "reference": ctx.reference.info["label"] if ctx.reference is not None else None,
        "device": str(ctx.device),
        "precision": ctx.precision,
        "created": started,
        "seconds": round(time.perf_counter() - t_total, 3),
        "versions": _versions(),
        "summary": summary,
        "tasks": tasks,
        "generations": generations,
        "settings": suite.to_dict(),
    }
    payload = to_strict_json(payload)
    path = R.results_file(out_dir, suite.name)
    _write_json(path, payload)
    for name, task in suite.tasks.items():
        if (after := kind(task.metric).after_write) is not None:
            after(payload, name, out_dir / suite.name)
    log.info("%s: wrote %s", lm.info["label"], path)
    return payload


# --------------------------------------------------------------------------------------------------------------
# Reference model, the run's teacher and the run's validation blocks


def run_validation_blocks(run_dir: Path) -> tuple[torch.Tensor | None, str]:
    """The run's held-out validation blocks (N, block_size), as `train()` saved them in `val_blocks.safetensors`,
    and a note saying where they came from, or (None, why not). Nothing is rebuilt or sampled again."""
    from safetensors.torch import load_file

    path = R.val_blocks_file(run_dir)
    if not path.is_file():
        return None, f"run validation blocks not used: {path} does not exist (a run from an older version?)"
    val = load_file(str(path))["val"]
    return val, f"run validation blocks ({val.shape[0]} x {val.shape[1]} tokens, {path.name})"


def _resolve_reference(
    spec: str | None,
    run_cfg: Config | None,
    run_dir: Path | None,
    device: torch.device,
    teacher: LoadedModel | None,
) -> tuple[LoadedModel | None, str]:
    """Load the fluency reference named by `spec` (see `Suite.reference`); returns (model or None, note)."""
    if spec is None or str(spec).lower() in ("none", "null", ""):
        return None, "fluency skipped: reference is null"
    if spec == "teacher":
        if teacher is not None:
            return teacher, f"reference: {teacher.info['label']}"
        if run_cfg is None or run_dir is None:
            return None, (
                "fluency skipped: reference 'teacher' means the run's teacher, and this checkpoint is not in a run "
                "directory; pass reference=<model dir | hub id | embedded:smollm2-135m>"
            )
        ref = load_run_teacher(run_cfg, device, run_dir)
        return ref, f"reference: {ref.info['label']}"
    ck = resolve_checkpoint(spec)
    ref = load_model(ck, device, role="reference")
    ref.info["label"] = f"reference ({ck.label})"
    return ref, f"reference: {ck.label}"


def set_cpu_heap(device: torch.device) -> None:
    """distill/core/cpu_heap.py for an evaluation on `device`, before any model loads (a bad setting fails first)."""
    from distill.core.cpu_heap import configure_cpu_heap, heap_log_line

    log.info("%s", heap_log_line(*configure_cpu_heap(cuda=device.type == "cuda")))


def build_context(
    suite: S.Suite,
    device: torch.device,
    run_cfg: Config | None,
    run_dir: Path | None,
    reference_spec: str | None,
    teacher: LoadedModel | None = None,
) -> Context:
    """What the tasks of `suite` share. A task that compares with the run's teacher gets it: `teacher` when the
    caller has it, else the fluency reference when that is the run's teacher, else the run's teacher loaded here."""
    reference, note = (None, "fluency not asked for")
    if _needs(suite, "reference"):
        reference, note = _resolve_reference(reference_spec, run_cfg, run_dir, device, teacher)
    if teacher is None and run_cfg is not None and run_dir is not None and _needs(suite, "teacher"):
        is_teacher = reference is not None and reference.info.get("role") == "teacher"
        teacher = reference if is_teacher else load_run_teacher(run_cfg, device, run_dir)
    blocks, blocks_note = None, "run validation blocks not used: not a run directory"
    if _needs(suite, "run_blocks") and run_dir is not None:
        blocks, blocks_note = run_validation_blocks(run_dir)
        if blocks is None:
            log.warning("%s; perplexity falls back to the task's path / dataset", blocks_note)
    from distill.core.precision import resolve_mixed_precision

    # a run's own precision; a model that is not a run's is evaluated in float32
    setting = run_cfg.train.mixed_precision if run_cfg is not None else "no"
    precision, why = resolve_mixed_precision(setting, cuda=device.type == "cuda")
    if _needs(suite, "generations"):
        log.info("generation precision: %s (%s)", precision, why)
    return Context(device, reference, note, blocks, blocks_note, precision, run_cfg, teacher)
