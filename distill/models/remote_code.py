"""Python code shipped with a model (`auto_map` in its config.json or tokenizer_config.json, `*.py` beside it):
run only when a recipe file sets `teacher.trust_remote_code: true` and the command confirms it
(`--trust-remote-code`), never carried into a student.

    allow_remote_code(cfg)       # before any of it runs (the tokenizer's included): refused unconfirmed, else warned
    library_config(config)       # the student's config as transformers' own class, without auto_map
    library_tokenizer(tok)       # the tokenizer the student is saved with, as transformers' own class
    check_no_code(folder)        # final/ carries no code: no *.py, no auto_map
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path

from distill.core.config import EMBEDDED_PREFIX, Config
from distill.core.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

CONFIRM_ENV = "FAIRDISTILL_TRUST_REMOTE_CODE"
"""Set to 1 by `--trust-remote-code` (and inherited by the processes a launcher starts): the confirmation."""

_WARNED: set[str] = set()


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def shipped_code(name: str) -> dict:
    """What code a local model folder ships: its `*.py` files, the classes its `auto_map`s name, its model_type;
    empty for a hub id or an embedded model (their files are not here to read)."""
    p = Path(name).expanduser()
    if name.startswith(EMBEDDED_PREFIX) or not p.is_dir():
        return {}
    config, tok = _json(p / "config.json"), _json(p / "tokenizer_config.json")
    auto_map = {**(config.get("auto_map") or {}), **(tok.get("auto_map") or {})}
    files = sorted(f.name for f in p.glob("*.py"))
    if not (auto_map or files):
        return {}
    return {"files": files, "auto_map": auto_map, "model_type": config.get("model_type")}


def library_arch(model_type: str | None) -> bool:
    """Whether transformers itself has the architecture `model_type` (so a student can be saved without code)."""
    from transformers import CONFIG_MAPPING

    return isinstance(model_type, str) and model_type in CONFIG_MAPPING


def _what_runs(name: str, code: dict) -> str:
    if not code:
        return f"the Python code of {name!r} (its hub repository's *.py files)"
    shown = code["files"] or sorted({str(v) for v in code["auto_map"].values()})
    return f"the Python code shipped with {name!r} ({', '.join(shown)})"


def confirmed() -> bool:
    return os.environ.get(CONFIRM_ENV, "") == "1"


def allow_remote_code(cfg: Config) -> None:
    """Before any teacher code runs: nothing to do without `teacher.trust_remote_code`; with it, refused unless
    confirmed, or when the teacher's architecture exists only in its own code (its student could not be saved
    without it); otherwise warned, once."""
    if not cfg.teacher.trust_remote_code:
        return
    name = cfg.teacher.name_or_path
    code = shipped_code(name)
    if code and not library_arch(code.get("model_type")):
        raise ModelError(not_library_message(name, code))
    runs = _what_runs(name, code)
    if not confirmed():
        raise ConfigError(
            f"teacher.trust_remote_code is true{f' in {cfg.source}' if cfg.source else ''}: {runs} would run on "
            "this machine, with your permissions, as the teacher and its tokenizer load; read that code, then "
            "confirm with --trust-remote-code (or set teacher.trust_remote_code: false: a teacher of a transformers "
            "architecture then loads with transformers' own code)"
        )
    if name not in _WARNED:
        _WARNED.add(name)
        log.warning(
            "teacher.trust_remote_code is on, confirmed: %s runs on this machine with your permissions; the student "
            "is saved as transformers' own architecture, without it",
            runs,
        )


def not_library_message(name: str, code: dict) -> str:
    return (
        f"teacher {name!r}: its model_type {code.get('model_type')!r} exists only in its own code "
        f"({', '.join(code['files']) or 'auto_map'}), not in transformers, so its student could be saved only "
        "with that code in final/, which would then run for everyone who loads the student; fairdistill saves "
        "students as transformers' own architectures only: choose a teacher of an architecture transformers has"
    )


def library_config(config):
    """`config` as transformers' own config class for its model_type, without `auto_map` (a teacher's own config
    class or code pointers would make the student load, and be saved, with the teacher's code). Unchanged when it
    is one already."""
    from transformers import CONFIG_MAPPING

    own = type(config).__module__.startswith("transformers.")
    if own and not getattr(config, "auto_map", None):
        return config
    model_type = getattr(config, "model_type", None)
    if not library_arch(model_type):
        name = getattr(config, "_name_or_path", "") or "?"
        raise ModelError(not_library_message(name, {"model_type": model_type, "files": []}))
    if own:
        out = copy.deepcopy(config)
        out.__dict__.pop("auto_map", None)
        return out
    data = config.to_dict()
    data.pop("auto_map", None)
    return CONFIG_MAPPING[model_type].from_dict(data)


def as_library_model(model, what: str):
    """`model` when it is transformers' own class; its config's `auto_map` (kept by a load without the code) is
    dropped, so saving it writes none."""
    if not type(model).__module__.startswith("transformers."):
        raise ModelError(
            f"{what} is {type(model).__name__} from {type(model).__module__}, not a transformers architecture; it "
            "could be saved only with that code in final/; use a student of a transformers architecture"
        )
    model.config.__dict__.pop("auto_map", None)
    return model


def library_tokenizer(tokenizer):
    """The tokenizer the student is saved with: as it is when transformers' own class; a teacher's own class is
    rewrapped around its fast backend (same vocabulary, merges and special tokens), or refused without one."""
    if type(tokenizer).__module__.startswith("transformers."):
        if not tokenizer.init_kwargs.get("auto_map"):
            return tokenizer
        plain = copy.copy(tokenizer)  # loaded without the code it names: saved without the pointer to it
        plain.init_kwargs = {k: v for k, v in tokenizer.init_kwargs.items() if k != "auto_map"}
        return plain
    from transformers import PreTrainedTokenizerFast

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError(
            f"the teacher's tokenizer is its own Python class ({type(tokenizer).__name__}) with no fast tokenizer "
            "inside, so the student could be saved only with that code in final/; use a teacher whose tokenizer "
            "transformers can load by itself"
        )
    special = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    return PreTrainedTokenizerFast(tokenizer_object=copy.deepcopy(backend), **special)


def check_no_code(folder: Path) -> None:
    """final/ carries no code: no `*.py` and no `auto_map` (checked before it is renamed into place)."""
    found = sorted(p.name for p in Path(folder).glob("*.py"))
    found += [
        f"auto_map in {n}"
        for n in ("config.json", "tokenizer_config.json")
        if _json(folder / n).get("auto_map")
    ]
    if found:
        raise ModelError(
            f"the student's final/ would carry code ({', '.join(found)}), which would run for everyone who loads "
            "it; not written. This is a fairdistill bug: please report it"
        )
