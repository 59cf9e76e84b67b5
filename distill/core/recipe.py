"""A recipe into a `Config`: dataclass defaults <- recipe YAML <- `key=value` overrides, one source of truth.

`load_config("recipes/debug.yaml", ["kd.alpha=0.7"])` returns a validated `Config`. Every problem found (unknown
keys with a "did you mean", wrong types, out-of-range values, missing files, cross-field conflicts) is gathered and
raised once as a `ConfigError`, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from distill.core import inherit
from distill.core.config import EMBEDDED_MODELS, EMBEDDED_PREFIX, PRUNE_BY, Config
from distill.core.errors import ConfigError
from distill.core.files import not_a_file
from distill.core.resources import resource_path
from distill.core.sections import INT64, build_section


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


def check_range(
    problems: list[str],
    where: str,
    value: float | int | None,
    lo=None,
    hi=None,
    lo_open=False,
    why: str = "",
):
    """Add to `problems` when a number lies outside [lo, hi] (or (lo, hi] with `lo_open`); None passes. `why`
    follows the range in the message."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi)
    if bad:
        left = "(" if lo_open else "["
        problems.append(
            f"{where} must be in {left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            f"{f' ({why})' if why else ''}, got {value}"
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
    _check_int64(cfg, p)
    return p


def _check_int64(node: Any, p: list[str], where: str = "") -> None:
    """Every integer of the recipe fits in 64 bits (torch and numpy hold them so), for the fields no range above
    bounds; a field whose range was already refused is not named twice."""
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            if not f.metadata.get("internal"):
                _check_int64(getattr(node, f.name), p, f"{where}.{f.name}" if where else f.name)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_int64(v, p, f"{where}[{i}]")
    elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > INT64:
        if not any(problem.startswith(f"{where} ") for problem in p):
            p.append(f"{where} must be an integer within +-(2**63 - 1), got {node}; give a smaller one")


SEED_MAX = 2**32 - 1
"""Seeds go to numpy, whose seeds are 32-bit: 0 .. 2**32 - 1."""
TEMPERATURE_RANGE = (0.01, 100.0)
"""Softmax temperatures: logits / T stay finite in float32 and bf16 above 0.01, and T**2 (the KD scale) below 100
is far from overflow; outside it the distribution is one-hot or uniform to float precision anyway."""
CHANGED_WEIGHT_MAX = 1000.0
"""`kd.changed_weight` multiplies KD terms of a loss summed over a whole step: kept where float32 sums stay finite."""


def _check_numbers(cfg: Config, p: list[str]) -> None:
    check_range(p, "kd.alpha", cfg.kd.alpha, 0, 1)
    check_range(
        p, "kd.temperature", cfg.kd.temperature, *TEMPERATURE_RANGE, why="logits / T and T**2 stay finite"
    )
    check_range(p, "kd.chunk_size", cfg.kd.chunk_size, 1)
    check_range(p, "kd.changed_weight", cfg.kd.changed_weight, 0, CHANGED_WEIGHT_MAX)
    check_range(p, "kd.changed_tv", cfg.kd.changed_tv, 0, 1, lo_open=True)
    check_range(p, "kd.log_ratio", cfg.kd.log_ratio, 0)
    check_range(p, "kd.log_ratio_mass", cfg.kd.log_ratio_mass, 0, 1, lo_open=True)
    if isinstance(cfg.kd.log_ratio, int | float) and cfg.kd.log_ratio > 0 and cfg.kd.alpha == 0:
        p.append(
            f"kd.log_ratio {cfg.kd.log_ratio:g} pulls the student towards the target's log-ratios, but kd.alpha is 0 "
            "(no target); set kd.alpha > 0 or kd.log_ratio: 0"
        )
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
    check_range(
        p,
        "data.sample_temperature",
        cfg.data.sample_temperature,
        *TEMPERATURE_RANGE,
        why="logits / T stay finite",
    )
    check_range(p, "run.seed", cfg.run.seed, 0, SEED_MAX, why="numpy's seed range")
    check_range(p, "data.seed", cfg.data.seed, 0, SEED_MAX, why="numpy's seed range")
    check_range(p, "data.sample_batch_size", cfg.data.sample_batch_size, 1)
    check_range(p, "data.num_workers", cfg.data.num_workers, 0)
    check_range(p, "train.micro_batch_size", cfg.train.micro_batch_size, 1)
    check_range(p, "train.grad_accum", cfg.train.grad_accum, 1)
    check_range(p, "train.max_steps", cfg.train.max_steps, 1)
    check_range(p, "train.max_tokens", cfg.train.max_tokens, 1)
    check_range(p, "train.lr", cfg.train.lr, 0, 1, lo_open=True)
    check_range(p, "train.weight_decay", cfg.train.weight_decay, 0)
    lr, wd = cfg.train.lr, cfg.train.weight_decay
    if isinstance(lr, float) and isinstance(wd, float) and 0 < lr <= 1 and lr * wd >= 1:
        p.append(
            f"train.lr x train.weight_decay must be below 1, got {lr:g} x {wd:g} = {lr * wd:g}: AdamW multiplies every "
            "weight by 1 - lr x weight_decay each step, so the weights would flip sign and grow without bound; lower "
            "train.weight_decay (0.01 to 0.1 is usual)"
        )
    check_range(p, "train.warmup_frac", cfg.train.warmup_frac, 0, 1)
    check_range(p, "train.min_lr_frac", cfg.train.min_lr_frac, 0, 1)
    check_range(p, "train.clip", cfg.train.clip, 0)
    for k in ("log_every", "eval_every", "probe_every", "save_every"):
        check_range(p, f"train.{k}", getattr(cfg.train, k), 0)
    check_range(p, "train.keep_last", cfg.train.keep_last, 1)


def _check_run(cfg: Config, p: list[str]) -> None:
    betas = cfg.train.betas
    numbers = isinstance(betas, list) and all(isinstance(b, float | int) for b in betas)
    if numbers and (len(betas) != 2 or not all(0 <= b < 1 for b in betas)):
        p.append(f"train.betas must be two numbers in [0, 1), got {cfg.train.betas}")
    if cfg.train.max_steps is None and cfg.train.max_tokens is None:
        p.append(
            "train.max_steps and train.max_tokens are both null; set one of them (e.g. train.max_steps=100)"
        )
    if cfg.train.max_steps is not None and cfg.train.max_tokens is not None:
        p.append("train.max_steps and train.max_tokens are both set; keep one (set the other to null)")
    name = cfg.run.name
    if isinstance(name, str) and not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        p.append(
            f"run.name {name!r} may hold only letters, digits, '.', '_' and '-' (it names a folder under run.output_dir)"
        )
    elif isinstance(name, str) and not re.match(r"[A-Za-z0-9]", name):
        p.append(
            f"run.name {name!r} must start with a letter or digit (a leading '-' reads as an option to every command "
            "given the folder, a leading '.' hides it or escapes run.output_dir); e.g. "
            f"run.name={name.lstrip('.-_') or 'run'}"
        )

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
    check_range(p, "student.erase.rank", s.erase.rank, 0, 64)
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
    source = str(recipe)
    if source == "-":
        raise ConfigError(
            "recipe '-': a recipe is read from a file, not from standard input; save it as a file (e.g. "
            "recipes/mine.yaml) and give its path"
        )
    path = resource_path(recipe)
    if path.is_dir():
        raise ConfigError(
            f"recipe {source!r} is a folder; give one recipe file, e.g. {source.rstrip('/')}/debug.yaml "
            f"({_shipped_recipes()})"
        )
    why = not_a_file(path)
    if why == "does not exist":
        raise ConfigError(f"recipe file not found: {source}; {_shipped_recipes()}")
    if why is not None:
        raise ConfigError(f"recipe {source!r} {why}; give a recipe YAML file, e.g. recipes/debug.yaml")
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
        raise ConfigError(
            "the recipe is empty (nothing but comments or blank lines); write its sections (teacher:, student:, "
            "data:, train:, ...): recipes/debug.yaml is a small complete one to start from",
            source,
        )
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
        data = inherit.resolve(recipe, read_recipe)  # its `base:` chain merged in (core/inherit.py)
    in_file = _trusts_remote_code(data)
    data = apply_overrides(data, list(overrides or []))
    problems = []
    if _trusts_remote_code(data) and not in_file:
        problems.append(
            "teacher.trust_remote_code: true is refused on the command line: it lets Python code shipped with the "
            "teacher run on this machine, so it is taken only from a recipe file, where it can be read and reviewed; "
            "write `teacher: {trust_remote_code: true}` in the recipe (a run asks for --trust-remote-code to confirm)"
        )
    cfg = config_from_dict(data, source, problems)
    cfg.overrides = list(overrides or [])
    return cfg


def _trusts_remote_code(data: dict) -> bool:
    teacher = data.get("teacher")
    return isinstance(teacher, dict) and teacher.get("trust_remote_code") is True


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
