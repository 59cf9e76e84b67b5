"""Every check a run can make before it loads a model, in one place: `distill check` and `train` both call
`preflight(cfg)`, so a recipe that passes the one is not refused by the other for a reason it could have seen.

It reads the data files (every record), the word lists and probe files, and the teacher's and a pretrained
student's `config.json` (layer count, vocabulary; never their weights). Every problem is gathered; one alone is
raised as itself (a `DataError`, `WordListError`, ...), several as one `ConfigError` listing them all.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from distill.core.config import EMBEDDED_PREFIX, Config
from distill.core.errors import ConfigError, FairDistillError, ModelError

log = logging.getLogger(__name__)


def _local_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}/config.json cannot be read ({type(e).__name__}: {e})") from None


def _depth_and_vocab(config: dict) -> tuple[int | None, int | None]:
    depth = config.get("num_hidden_layers", config.get("n_layer"))
    return depth, config.get("vocab_size")


def teacher_shape(cfg: Config) -> tuple[int | None, int | None, int | None]:
    """(layers, config vocab_size, tokenizer size or None) of the teacher, from its config.json and tokenizer files
    only; nothing is written. An embedded model reports the shape recorded for it (for SmolLM2 before its first
    conversion, the numbers its GGUF file holds); a hub model not in the local cache reports (None, None, None):
    it is checked when it loads."""
    from distill.models.embedded import EMBEDDED
    from distill.models.loading import check_local_dir, is_local_path

    name = cfg.teacher.name_or_path
    if name.startswith(EMBEDDED_PREFIX):
        key = name[len(EMBEDDED_PREFIX) :]
        converted = Path(cfg.data.cache_dir) / "embedded" / key
        if key == "tiny-random" or not (converted / "config.json").is_file():
            spec = EMBEDDED[key]
            return spec.get("layers"), spec.get("vocab"), None
        path = converted
    elif is_local_path(name):
        path = Path(name).expanduser()
        check_local_dir(path, "teacher.name_or_path")
    else:
        try:
            from transformers import AutoConfig

            c = AutoConfig.from_pretrained(name, revision=cfg.teacher.revision)
        except Exception:  # offline and not cached: train's own loader names the problem
            log.info("teacher %s: config not available here; its layer count is checked when it loads", name)
            return None, None, None
        return getattr(c, "num_hidden_layers", None), getattr(c, "vocab_size", None), None
    depth, vocab = _depth_and_vocab(_local_config(path))
    tokens = None
    if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
        from distill.models.loading import load_tokenizer

        tokens = len(load_tokenizer(str(path)))
    return depth, vocab, tokens


def _check_models(cfg: Config) -> None:
    problems: list[str] = []
    depth, vocab, tokens = teacher_shape(cfg)
    s = cfg.student
    if s.init == "teacher_layers" and depth is not None and s.layers:
        bad = [i for i in s.layers if i >= depth]
        if bad:
            problems.append(
                f"student.layers {s.layers}: the teacher has {depth} layers (0..{depth - 1}); {bad} do not exist"
            )
    if vocab is not None and tokens is not None and tokens > vocab:
        problems.append(
            f"teacher {cfg.teacher.name_or_path!r}: its tokenizer has {tokens} tokens but its config vocab_size is "
            f"{vocab}; save the model with its own tokenizer, or grow the embeddings "
            "(model.resize_token_embeddings(len(tokenizer))) and save it again"
        )
    if s.init == "pretrained" and s.path:
        from distill.models.loading import check_local_dir, is_local_path

        if is_local_path(s.path):
            p = Path(s.path).expanduser()
            check_local_dir(p, "student.path")
            _, student_vocab = _depth_and_vocab(_local_config(p))
            if vocab is not None and student_vocab is not None and student_vocab != vocab:
                problems.append(
                    f"teacher vocab ({vocab}) != student vocab ({student_vocab}): KD compares full next-token "
                    "distributions; use student.init: teacher_layers or a student trained with the teacher's tokenizer"
                )
    if problems:
        raise ConfigError(problems)


def check_run_folder(cfg: Config) -> None:
    """What `train` would refuse about the run folder, read without writing: another run holding it, or a
    recipe it does not belong to."""
    from distill.core.ownership import check_identity, lock_owner
    from distill.core.rundir import RunDir

    run = RunDir.for_config(cfg)
    owner = lock_owner(run)
    if owner is not None:
        raise FairDistillError(owner)
    check_identity(run, cfg)


def preflight(cfg: Config, run_folder: bool = False) -> None:
    """Run every check that needs no model weights; raise what was found (see the module docstring).
    `run_folder`: also `check_run_folder` (`distill check`; `train` takes the folder itself before this)."""
    from distill.counterfactual.wordlists import load_lexicon, load_professions
    from distill.data.transfer import preflight as data_preflight
    from distill.evaluation.probe import load_templates

    checks = [lambda: data_preflight(cfg.data)]
    if cfg.augment.mode != "off" or cfg.perturb.kind != "none":
        checks.append(lambda: load_lexicon(cfg.augment.pairs, cfg.augment.one_to_many, cfg.augment.names))
    if run_folder:
        checks.append(lambda: check_run_folder(cfg))
    checks += [
        lambda: load_professions(cfg.probe.professions),
        lambda: load_templates(cfg.probe.templates),
        lambda: _check_models(cfg),
    ]
    if cfg.probe.winogender:
        from distill.evaluation import stereotype

        checks += [
            lambda: stereotype.load_templates(cfg.probe.winogender),
            lambda: stereotype.load_occupation_stats(cfg.probe.winogender),
        ]
    found: list[FairDistillError] = []
    for check in checks:
        try:
            check()
        except ConfigError as e:
            found += [ConfigError(p) for p in e.problems]
        except FairDistillError as e:
            found.append(e)
    if len(found) == 1 and not isinstance(found[0], ConfigError):
        raise found[0]
    if found:
        raise ConfigError([str(e) for e in found], cfg.source)
