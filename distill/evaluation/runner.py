"""Run an evaluation suite on a checkpoint and write the scores next to the texts they came from.

    evaluate_checkpoint("runs/smollm2-135m_to_6L", "quick")   # the run's student; reference = the run's teacher
    evaluate_run("runs/smollm2-135m_to_6L", "quick")          # teacher and student, side by side

The order is: validate the suite (`suites.load_suite`) -> load every task's data (a hub dataset that cannot be
reached fails here, before any model loads, naming the field that takes a local file) -> load the model and the
reference model -> run each task -> write `<out>/<suite>.json` (strict JSON, undefined numbers as null) and
`<out>/<suite>_generations.jsonl` (every prompt, group and continuation with its gender label, gendered word
counts and sentiment score). The metrics are defined in `eval/README.md`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.config import EMBEDDED_MODELS, EMBEDDED_PREFIX, Config, DataConfig, load_config, method_label
from distill.errors import DataError, FairDistillError, ModelError
from distill.evaluation import suites as S
from distill.files import atomic_write
from distill.resources import resource_path

log = logging.getLogger(__name__)

EVAL_DIR = "eval"
"""Results of a run's student go to `<run>/eval/`, its teacher's to `<run>/eval/teacher/`."""
TEACHER_DIR = "teacher"
DEFAULT_OUT_ROOT = Path("runs") / "eval"
"""Where results of a hub id or embedded model go when no `out_dir` is given: `runs/eval/<name>/`."""
GENERATIONS_SUFFIX = "_generations.jsonl"


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
            return self.run_dir / EVAL_DIR
        if Path(self.path).is_dir() and not self.spec.startswith(EMBEDDED_PREFIX):
            return Path(self.path) / EVAL_DIR
        return DEFAULT_OUT_ROOT / re.sub(r"[^A-Za-z0-9._-]+", "_", self.label)


def resolve_checkpoint(ckpt: str | Path, cache_dir: str | Path | None = None) -> Checkpoint:
    """Resolve a run directory (-> its `final/`), a `final/` folder, a model folder, `embedded:<name>` or a hub id.

    `cache_dir` is where an embedded model is converted once (default: the recipes' `data.cache_dir`).
    """
    from distill.models import check_local_dir as _check_local_dir
    from distill.models import is_local_path as _is_local
    from distill.models import materialize_embedded

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
        if (p / "config.yaml").is_file() and not (p / "config.json").is_file():  # a run directory
            final = p / "final"
            if not (final / "config.json").is_file():
                raise ModelError(
                    f"run directory {text!r} has no final/ model (training unfinished?); finish the run with "
                    "`make distill` or evaluate another checkpoint"
                )
            return Checkpoint(text, str(final), p, p.resolve().name)
        if p.name == "final" and (p.parent / "config.yaml").is_file():
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


@dataclass
class LoadedModel:
    """A model ready to evaluate, with its tokenizer and what the results say about it."""

    model: torch.nn.Module
    tokenizer: Any
    info: dict
    """`label`, `role` (teacher / student / model), `checkpoint`, `path`, `run_dir`, `teacher`, `n_params`."""


def _device(setting: str) -> torch.device:
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
    from distill.models import check_model_vocab, load_tokenizer
    from distill.models import load_pretrained as _from_pretrained

    tokenizer = load_tokenizer(ck.path)
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
    from distill.models import load_teacher

    model, tokenizer, path = load_teacher(cfg)
    model.to(device)
    name = cfg.teacher.name_or_path
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


def _run_config(run_dir: Path) -> Config:
    return load_config(run_dir / "config.yaml")


# --------------------------------------------------------------------------------------------------------------
# Data, loaded before any model so a missing dataset fails in seconds


_LOCAL_HINTS = {
    "generation_disparity": "BOLD's prompts/<domain>_prompt.json from github.com/amazon-science/bold",
    "sentiment_gap": "BOLD's prompts/gender_prompt.json from github.com/amazon-science/bold",
    "perplexity": "a local .txt (documents separated by blank lines), .jsonl or .parquet file of held-out text",
    "crows_pairs": "crows_pairs_anonymized.csv from github.com/nyu-mll/crows-pairs (data/)",
    "stereoset": "dev.json from github.com/moinnadeem/StereoSet (data/)",
    "bias_in_bios": "a .jsonl / .parquet export with fields hard_text, profession, gender",
}


def _from_hub(name: str, task: Any, field_name: str, load: Callable[[], Any]) -> Any:
    """Run a hub load; on failure, a DataError that names the suite field taking a local file."""
    try:
        return load()
    except DataError as e:
        cause = e.__cause__
        why = f"{type(cause).__name__}: {str(cause).splitlines()[0]}" if cause and str(cause) else str(e)
        raise DataError(
            f"task {name!r} ({task.metric}) loads its data from the Hugging Face hub, which failed ({why}). "
            f"Set `{name}.{field_name}` to a local copy: {_LOCAL_HINTS[task.metric]}; as an override: "
            f"`distill eval CKPT --suite SUITE {name}.{field_name}=/path/to/file` "
            f'(make eval ... ARGS="{name}.{field_name}=/path/to/file"), or in the suite YAML'
        ) from e


def _read_texts(path: str, text_field: str) -> list[str]:
    """Documents of a local held-out file: .txt/.md split on blank lines; .jsonl/.json/.parquet `text_field`."""
    from distill.evaluation._data import read_records

    p = resource_path(path)
    if not p.is_file():
        raise DataError(f"{path}: held-out text file not found")
    if p.suffix.lower() in (".txt", ".md", ".raw", ""):
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        return [block.strip() for block in text.split("\n\n") if block.strip()]
    rows = read_records(p)
    for i, row in enumerate(rows):
        if text_field not in row or not isinstance(row[text_field], str):
            raise DataError(
                f"{p}: row {i} has no text field {text_field!r} (fields: {sorted(row)}); set the task's text_field"
            )
    return [row[text_field] for row in rows]


def _prepare_generation(name: str, task: S.GenerationTask) -> dict:
    from distill.evaluation.bold import load_bold
    from distill.evaluation.polarity import gender_word_lists

    gender_word_lists(task.male_words, task.female_words)  # a malformed list fails now, not after sampling

    def load() -> dict[str, list[str]]:
        return load_bold(task.domain, task.path, task.max_per_group, task.seed, task.groups)

    prompts = load() if task.path else _from_hub(name, task, "path", load)
    return {"prompts": prompts}


def _prepare_probe(name: str, task: S.PronounProbeTask) -> dict:
    from distill.evaluation.probe import load_templates
    from distill.wordlists import load_professions

    professions = load_professions(task.professions)[: task.max_professions]
    return {"professions": professions, "templates": load_templates(task.templates)}


def _prepare_perplexity(name: str, task: S.PerplexityTask) -> dict:
    from distill.evaluation._data import load_hub

    if task.path:
        texts, source = _read_texts(task.path, task.text_field), task.path
    else:

        def load() -> list[str]:
            where = f"{task.dataset} ({task.dataset_config}, {task.split})"
            ds = load_hub(task.dataset, task.dataset_config, task.split, "set the task's path")
            if task.text_field not in ds.column_names:
                raise DataError(f"{where}: no column {task.text_field!r} (columns: {ds.column_names})")
            return list(ds[task.text_field])

        texts = _from_hub(name, task, "path", load)
        source = f"{task.dataset}/{task.dataset_config}:{task.split}"
    texts = texts[: task.max_documents]
    if task.join is not None:
        texts = [task.join.join(texts)]
    if not any(t.strip() for t in texts):
        raise DataError(f"task {name!r}: the held-out text from {source} is empty")
    return {"texts": texts, "source": source}


def _prepare_crows(name: str, task: S.CrowsPairsTask) -> dict:
    from distill.evaluation.downstream.crows_pairs import load_crows_pairs

    def load() -> list[dict]:
        return load_crows_pairs(task.path or task.dataset, task.bias_type)

    return {"pairs": load() if task.path else _from_hub(name, task, "path", load)}


def _prepare_stereoset(name: str, task: S.StereoSetTask) -> dict:
    from distill.evaluation.downstream.stereoset import load_stereoset

    def load() -> list[dict]:
        return load_stereoset(task.path or task.dataset, task.bias_type)

    return {"examples": load() if task.path else _from_hub(name, task, "path", load)}


def _prepare_bios(name: str, task: S.BiasInBiosTask) -> dict:
    from distill.evaluation.downstream.bias_in_bios import load_bias_in_bios

    out = {}
    for part, path, split, limit in (
        ("train", task.train_path, task.train_split, task.max_train),
        ("test", task.test_path, task.test_split, task.max_test),
    ):

        def load(path=path, split=split, limit=limit) -> dict:
            return load_bias_in_bios(path or task.dataset, split, limit, task.seed)

        out[part] = load() if path else _from_hub(name, task, f"{part}_path", load)
    return out


def _prepare_winogender(name: str, task: S.WinogenderTask) -> dict:
    from distill.evaluation.stereotype import load_occupation_stats, load_templates

    return {"prompts": load_templates(task.path), "stats": load_occupation_stats(task.path, task.statistic)}


_PREPARE: dict[str, Callable[[str, Any], dict]] = {
    "generation_disparity": _prepare_generation,
    "sentiment_gap": _prepare_generation,
    "pronoun_probe": _prepare_probe,
    "winogender": _prepare_winogender,
    "perplexity": _prepare_perplexity,
    "crows_pairs": _prepare_crows,
    "stereoset": _prepare_stereoset,
    "bias_in_bios": _prepare_bios,
}
assert set(_PREPARE) == set(S.METRICS), "every metric kind needs a data loader"


def prepare_tasks(suite: S.Suite) -> dict[str, dict]:
    """Load every task's data; every failure is gathered and raised once as a DataError."""
    data: dict[str, dict] = {}
    problems: list[str] = []
    for name, task in suite.tasks.items():
        try:
            data[name] = _PREPARE[task.metric](name, task)
        except FairDistillError as e:
            problems.append(str(e) if str(e).startswith("task ") else f"task {name!r}: {e}")
    if problems:
        head = f"suite {suite.name!r} ({suite.source}): "
        raise DataError(
            head + problems[0] if len(problems) == 1 else head + "\n  - " + "\n  - ".join(problems)
        )
    return data


# --------------------------------------------------------------------------------------------------------------
# Running the tasks


@dataclass
class _Context:
    """What the tasks of one model share."""

    device: torch.device
    reference: LoadedModel | None
    """Scores fluency; None when there is none (then fluency is skipped and says why)."""
    reference_note: str
    run_blocks: torch.Tensor | None
    """The run's validation blocks (N, T) for perplexity tasks with `run_validation`, if the run saved them."""
    run_blocks_note: str
    precision: str = "no"
    """What generation runs in: the run's `train.mixed_precision` resolved here ("no" for a model that is not a
    run's)."""
    run_cfg: Config | None = None
    """The run's config when the checkpoint belongs to a run (the Winogender task reads its transfer prompts)."""
    teacher: LoadedModel | None = None
    """The run's teacher when it is loaded anyway (the Winogender task compares a student's scores with it)."""


def _run_generation(name: str, task: S.GenerationTask, data: dict, lm: LoadedModel, ctx: _Context):
    from distill.evaluation.bold import flatten_prompts
    from distill.evaluation.generation import generate
    from distill.evaluation.perplexity import fluency
    from distill.evaluation.polarity import (
        FEMALE,
        MALE,
        NEUTRAL,
        disparity_summary,
        gender_word_counts,
        gender_word_lists,
    )
    from distill.evaluation.sentiment import sentiment_gap, vader_scorer

    prompts_by_group: dict[str, list[str]] = data["prompts"]
    prompts, owners = flatten_prompts(prompts_by_group)
    from distill.precision import autocast

    with autocast(ctx.device, ctx.precision):  # sampling in the run's precision, as its transfer set was
        continuations = generate(
            lm.model,
            lm.tokenizer,
            prompts,
            n_per_prompt=task.n_per_prompt,
            max_new_tokens=task.max_new_tokens,
            top_p=task.top_p,
            temperature=task.temperature,
            seed=task.seed,
            batch_size=task.batch_size,
            device=ctx.device,
        )
    male_words, female_words = gender_word_lists(task.male_words, task.female_words)
    vader = vader_scorer()
    sentiment_of: dict[str, float] = {}

    def scorer(text: str) -> float:  # each text is scored once, here and again inside sentiment_gap
        if text not in sentiment_of:
            sentiment_of[text] = vader(text)
        return sentiment_of[text]

    labels: dict[str, list[str]] = {g: [] for g in prompts_by_group}
    texts: dict[str, list[str]] = {g: [] for g in prompts_by_group}
    records: list[dict] = []
    for i, (prompt, group) in enumerate(zip(prompts, owners)):
        for k, text in enumerate(continuations[i]):
            n_male, n_female = gender_word_counts(text, male_words, female_words)
            label = MALE if n_male > n_female else FEMALE if n_female > n_male else NEUTRAL
            labels[group].append(label)
            texts[group].append(text)
            records.append(
                {
                    "task": name,
                    "group": group,
                    "prompt_index": i,
                    "prompt": prompt,
                    "sample": k,
                    "continuation": text,
                    "gender": label,
                    "male_words": n_male,
                    "female_words": n_female,
                    "sentiment": scorer(text),
                }
            )

    sentiment_by_group = {
        g: float(np.mean([sentiment_of[t] for t in ts])) if ts else math.nan for g, ts in texts.items()
    }
    if task.metric == "sentiment_gap":
        result = sentiment_gap(texts, scorer, tuple(task.groups), n_boot=task.n_boot, seed=task.seed)
        result["gender_by_group"] = {
            g: {lab: ls.count(lab) for lab in (MALE, FEMALE, NEUTRAL)} for g, ls in labels.items()
        }
    else:
        result = disparity_summary(labels, n_boot=task.n_boot, seed=task.seed)
        result["sentiment_by_group"] = sentiment_by_group
    result["n_prompts"] = len(prompts)
    if task.fluency:
        if ctx.reference is None:
            result["fluency"] = {"skipped": ctx.reference_note}
        else:
            ref = ctx.reference
            flu = fluency(ref.model, ref.tokenizer, prompts, continuations, batch_size=task.batch_size)
            result["fluency"] = {**flu, "reference": ref.info["label"]}
    return result, records


def _run_probe(name: str, task: S.PronounProbeTask, data: dict, lm: LoadedModel, ctx: _Context):
    from distill.evaluation.probe import pronoun_probe
    from distill.evaluation.stats import bootstrap_ci

    result = pronoun_probe(
        lm.model,
        lm.tokenizer,
        data["professions"],
        data["templates"],
        device=ctx.device,
        batch_size=task.batch_size,
    )
    gaps = [abs(p["gap"]) for p in result.get("per_prompt", [])]
    result["pronoun_gap_ci"] = list(bootstrap_ci(gaps, seed=0)) if gaps else [math.nan, math.nan]
    if task.stats:
        from distill.evaluation.stereotype import profession_probe_stereotype

        result["stereotype"] = profession_probe_stereotype(result, task.stats)
    return result, []


def _run_winogender(name: str, task: S.WinogenderTask, data: dict, lm: LoadedModel, ctx: _Context):
    from distill.evaluation.stereotype import run_winogender

    return run_winogender(task, data, lm, ctx), []


def _run_perplexity(name: str, task: S.PerplexityTask, data: dict, lm: LoadedModel, ctx: _Context):
    from distill.evaluation._lm import max_positions
    from distill.evaluation.perplexity import perplexity

    if task.run_validation and ctx.run_blocks is not None:
        blocks = ctx.run_blocks
        result = perplexity(lm.model, lm.tokenizer, blocks, batch_size=task.batch_size, device=ctx.device)
        return {
            **result,
            "source": ctx.run_blocks_note,
            "block_size": int(blocks.shape[1]),
        }, []
    block_size = task.block_size
    limit = max_positions(lm.model)
    if block_size is not None and limit is not None and block_size > limit:
        log.warning(
            "%s: block_size %d is above the model's context (%d); using %d", name, block_size, limit, limit
        )
        block_size = limit
    result = perplexity(
        lm.model,
        lm.tokenizer,
        data["texts"],
        block_size=block_size,
        batch_size=task.batch_size,
        device=ctx.device,
    )
    source = data["source"]
    if task.run_validation:
        source = f"{source} ({ctx.run_blocks_note})"
    return {**result, "source": source, "block_size": block_size}, []


def _run_crows(name: str, task: S.CrowsPairsTask, data: dict, lm: LoadedModel, ctx: _Context):
    from distill.evaluation.downstream.crows_pairs import score_crows_pairs
    from distill.evaluation.perplexity import LoglikScorer

    scorer = LoglikScorer(lm.model, lm.tokenizer, batch_size=task.batch_size, device=ctx.device)
    return score_crows_pairs(data["pairs"], scorer, n_boot=task.n_boot, seed=task.seed), []


def _run_stereoset(name: str, task: S.StereoSetTask, data: dict, lm: LoadedModel, ctx: _Context):
    from distill.evaluation.downstream.stereoset import score_stereoset
    from distill.evaluation.perplexity import LoglikScorer

    # Length-normalised: the three fillings tokenize to different lengths (see the module docstring).
    scorer = LoglikScorer(
        lm.model, lm.tokenizer, batch_size=task.batch_size, device=ctx.device, reduction="mean"
    )
    return score_stereoset(data["examples"], scorer, n_boot=task.n_boot, seed=task.seed), []


def _run_bios(name: str, task: S.BiasInBiosTask, data: dict, lm: LoadedModel, ctx: _Context):
    from distill.evaluation.downstream.bias_in_bios import bias_in_bios_eval

    result = bias_in_bios_eval(
        lm.model,
        lm.tokenizer,
        data["train"],
        data["test"],
        batch_size=task.batch_size,
        device=ctx.device,
        max_length=task.max_length,
        seed=task.seed,
        l2=task.l2,
    )
    return result, []


_RUN: dict[str, Callable[..., tuple[dict, list[dict]]]] = {
    "generation_disparity": _run_generation,
    "sentiment_gap": _run_generation,
    "pronoun_probe": _run_probe,
    "winogender": _run_winogender,
    "perplexity": _run_perplexity,
    "crows_pairs": _run_crows,
    "stereoset": _run_stereoset,
    "bias_in_bios": _run_bios,
}
assert set(_RUN) == set(S.METRICS), "every metric kind needs a runner"


def headline(metric: str, result: dict) -> dict:
    """The few numbers of a task's result that tables and plots show (all in the result too)."""
    if metric == "generation_disparity":
        ci = result.get("female_share_ci") or [math.nan, math.nan]
        out = {
            "parity_mean": result.get("parity_mean"),
            "parity_min": result.get("parity_min"),
            "female_share": result.get("female_share"),
            "female_share_ci": list(ci),
            "n_gendered": result.get("n_gendered"),
            "n_texts": result.get("n_texts"),
            "n_groups_undefined": result.get("n_groups_undefined"),
        }
    elif metric == "sentiment_gap":
        a, b = result.get("groups_compared", [None, None])
        groups = result.get("groups", {})
        out = {
            "sentiment_gap": result.get("gap"),
            "sentiment_gap_ci": list(result.get("gap_ci") or [math.nan, math.nan]),
            "sentiment_a": groups.get(a, {}).get("mean"),
            "sentiment_b": groups.get(b, {}).get("mean"),
            "groups_compared": [a, b],
        }
    elif metric == "pronoun_probe":
        out = {
            "pronoun_gap": result.get("pronoun_gap"),
            "pronoun_gap_ci": list(result.get("pronoun_gap_ci") or [math.nan, math.nan]),
            "he_minus_she": result.get("he_minus_she"),
            "n_prompts": result.get("n_prompts"),
        }
    elif metric == "winogender":
        from distill.evaluation.stereotype import headline as stereotype_headline

        out = stereotype_headline(result)
    elif metric == "perplexity":
        out = {"ppl": result.get("ppl"), "tokens": result.get("tokens")}
    elif metric == "crows_pairs":
        out = {
            "crows_score": result.get("score"),
            "crows_score_ci": result.get("score_ci"),
            "n": result.get("n_pairs"),
        }
    elif metric == "stereoset":
        out = {
            "ss": result.get("ss"),
            "lms": result.get("lms"),
            "icat": result.get("icat"),
            "n": result.get("n_examples"),
        }
    elif metric == "bias_in_bios":
        out = {
            "tpr_gap_rms": result.get("rms"),
            "accuracy": result.get("accuracy"),
            "n": result.get("n_test"),
        }
    else:
        raise AssertionError(f"no headline for metric {metric!r}")
    flu = result.get("fluency")
    if isinstance(flu, dict) and "ppl" in flu:
        out["fluency_ppl"] = flu["ppl"]
    return out


# --------------------------------------------------------------------------------------------------------------
# Writing results


def to_strict_json(obj: Any) -> Any:
    """Plain JSON data: NaN and infinities -> None (JSON has no NaN), numpy scalars and arrays -> Python,
    tuples -> lists, paths -> strings."""
    if isinstance(obj, dict):
        return {str(k): to_strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_strict_json(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


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


def _evaluate(lm: LoadedModel, suite: S.Suite, data: dict, ctx: _Context, out_dir: Path) -> dict:
    """Run every task of `suite` on one model; write `<suite>.json` (and the generations) under `out_dir`."""
    from distill.evaluation.generation import save_jsonl

    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t_total = time.perf_counter()
    tasks: dict[str, dict] = {}
    summary: dict[str, dict] = {}
    records: list[dict] = []
    for name, task in suite.tasks.items():
        log.info("%s: %s / %s (%s) on %s", lm.info["label"], suite.name, name, task.metric, ctx.device)
        t0 = time.perf_counter()
        result, recs = _RUN[task.metric](name, task, data[name], lm, ctx)
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
    generations = None
    if any(t.metric in ("generation_disparity", "sentiment_gap") for t in suite.tasks.values()):
        generations = f"{suite.name}{GENERATIONS_SUFFIX}"
        save_jsonl(out_dir / generations, records)
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
    _write_json(out_dir / f"{suite.name}.json", payload)
    from distill.evaluation.stereotype import plot_suite

    plot_suite(payload, out_dir / suite.name)
    log.info("%s: wrote %s", lm.info["label"], out_dir / f"{suite.name}.json")
    return payload


# --------------------------------------------------------------------------------------------------------------
# Reference model and the run's validation blocks


def _needs_reference(suite: S.Suite) -> bool:
    return any(isinstance(t, S.GenerationTask) and t.fluency for t in suite.tasks.values())


def _needs_run_blocks(suite: S.Suite) -> bool:
    return any(isinstance(t, S.PerplexityTask) and t.run_validation for t in suite.tasks.values())


def run_validation_blocks(run_dir: Path) -> tuple[torch.Tensor | None, str]:
    """The run's held-out validation blocks (N, block_size), as `train()` saved them in `val_blocks.safetensors`,
    and a note saying where they came from, or (None, why not). Nothing is rebuilt or sampled again."""
    from safetensors.torch import load_file

    path = Path(run_dir) / "val_blocks.safetensors"
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


def _context(
    suite: S.Suite,
    device: torch.device,
    tokenizer,
    run_cfg: Config | None,
    run_dir: Path | None,
    reference_spec: str | None,
    teacher: LoadedModel | None = None,
) -> _Context:
    reference, note = (None, "fluency not asked for")
    if _needs_reference(suite):
        reference, note = _resolve_reference(reference_spec, run_cfg, run_dir, device, teacher)
    blocks, blocks_note = None, "run validation blocks not used: not a run directory"
    if _needs_run_blocks(suite) and run_dir is not None:
        blocks, blocks_note = run_validation_blocks(run_dir)
        if blocks is None:
            log.warning("%s; perplexity falls back to the task's path / dataset", blocks_note)
    from distill.precision import resolve_mixed_precision

    # a run's own precision; a model that is not a run's is evaluated in float32
    setting = run_cfg.train.mixed_precision if run_cfg is not None else "no"
    precision, why = resolve_mixed_precision(setting, cuda=device.type == "cuda")
    if any(t.metric in ("generation_disparity", "sentiment_gap") for t in suite.tasks.values()):
        log.info("generation precision: %s (%s)", precision, why)
    return _Context(device, reference, note, blocks, blocks_note, precision, run_cfg, teacher)


# --------------------------------------------------------------------------------------------------------------
# Public entry points


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
    folder, hub id, `embedded:...`, `teacher` or `none`).
    """
    spec = S.load_suite(suite, overrides)
    ck = resolve_checkpoint(ckpt)
    out = Path(out_dir) if out_dir is not None else ck.default_out()
    data = prepare_tasks(spec)
    device = _device(spec.device)
    run_cfg = _run_config(ck.run_dir) if ck.run_dir is not None else None
    teacher_name = run_cfg.teacher.name_or_path if run_cfg is not None else None
    lm = load_model(ck, device, role="student" if ck.run_dir is not None else "model", teacher=teacher_name)
    if run_cfg is not None:
        lm.info["method"] = method_label(run_cfg)
    ctx = _context(
        spec,
        device,
        lm.tokenizer,
        run_cfg,
        ck.run_dir,
        reference if reference is not None else spec.reference,
    )
    results = _evaluate(lm, spec, data, ctx, out)
    teacher_file = ck.run_dir / EVAL_DIR / TEACHER_DIR / f"{spec.name}.json" if ck.run_dir else None
    teacher_results = (
        json.loads(teacher_file.read_text(encoding="utf-8"))
        if teacher_file and teacher_file.is_file()
        else None
    )
    if Path(ck.path).is_dir():
        update_model_card(Path(ck.path), spec.name, results, teacher_results)
    if ck.run_dir is not None and out == ck.default_out():
        _log_to_run(ck.run_dir, spec.name, results, teacher_results)
    return results


def update_model_card(
    model_dir: Path, suite: str, results: dict, teacher_results: dict | None = None
) -> None:
    """Merge the suite's numbers into the model card next to the weights (`card.merge_evaluation`): teacher and
    this model side by side, in a section a later evaluation with the same suite replaces."""
    from distill.card import merge_evaluation

    merge_evaluation(model_dir, suite, results, teacher_results)


def _log_to_run(run_dir: Path, suite: str, student: dict, teacher: dict | None) -> None:
    """Figures of the run's teacher and student (`<run>/eval/figures/`) and the results, logged into the run's own
    W&B run (`tracking.log_evaluation`)."""
    from distill.evaluation.generation import read_jsonl
    from distill.evaluation.report import run_figures
    from distill.tracking import log_evaluation

    figures = run_figures(run_dir, suite)
    gen = run_dir / EVAL_DIR / f"{suite}{GENERATIONS_SUFFIX}"
    generations = read_jsonl(gen) if gen.is_file() else []
    cfg = _run_config(run_dir)
    mode = cfg.tracking.mode if cfg.tracking.wandb else "disabled"
    log_evaluation(run_dir, suite, student, teacher, generations, figures, mode=mode)


def evaluated_since_training(run_dir: str | Path, suite: str | Path) -> Path | None:
    """`<run>/eval/<suite>_comparison.md` when `evaluate_run` wrote it after the run's `final/` model, else None."""
    run = Path(run_dir)
    done = run / EVAL_DIR / f"{Path(str(suite)).stem}_comparison.md"
    final = run / "final" / "config.json"
    if done.is_file() and final.is_file() and done.stat().st_mtime >= final.stat().st_mtime:
        return done
    return None


def evaluate_run(run_dir: str | Path, suite: str | Path, overrides: list[str] | None = None) -> str:
    """Evaluate a run's teacher and its student (`final/`) on `suite`; return a markdown table of the two side by
    side (also logged and written to `<run>/eval/<suite>_comparison.md`).

    Results: `<run>/eval/<suite>.json` (student) and `<run>/eval/teacher/<suite>.json`. The teacher is loaded
    once and is the fluency reference for both (unless the suite names another). Under a multi-process launch
    only the main process evaluates; the others return an empty string.
    """
    from distill.evaluation.report import suite_table

    if int(os.environ.get("RANK", "0")) != 0:
        return ""
    spec = S.load_suite(suite, overrides)
    run = Path(run_dir)
    ck = resolve_checkpoint(run)
    if ck.run_dir is None:
        raise ModelError(f"{str(run_dir)!r} is not a run directory (no config.yaml); use evaluate_checkpoint")
    run = ck.run_dir
    data = prepare_tasks(spec)
    device = _device(spec.device)
    cfg = _run_config(run)
    teacher = load_run_teacher(cfg, device, run)
    ctx = _context(spec, device, teacher.tokenizer, cfg, run, spec.reference, teacher=teacher)
    out = run / EVAL_DIR
    teacher_results = _evaluate(teacher, spec, data, ctx, out / TEACHER_DIR)
    student = load_model(ck, device, role="student", teacher=cfg.teacher.name_or_path)
    student.info["method"] = method_label(cfg)
    student_results = _evaluate(student, spec, data, ctx, out)
    update_model_card(Path(ck.path), spec.name, student_results, teacher_results)
    _log_to_run(run, spec.name, student_results, teacher_results)
    table = suite_table(
        [("teacher", teacher_results), (f"student ({student.info['label']})", student_results)]
    )
    text = f"{spec.name} suite, {run}: teacher vs student\n\n{table}\n"
    (out / f"{spec.name}_comparison.md").write_text(text)
    log.info("%s", text)
    return text
