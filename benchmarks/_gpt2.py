"""GPT-2-shaped teachers and students with random weights, for `bench_step.py --student gpt2-6L | gpt2-large-18L`
and the GPU check (`scripts/gpu_check.sh`): GPT-2's shapes from transformers' `GPT2Config`, nothing from the hub.

The vocabulary is GPT-2's 50,257 rows, so every vocabulary-sized cost (the output projection, the KD sums, the
perturbation's passes) is the real one. The tokenizer is the project's own `embedded:tiny-random` one (a 1,024-token
byte-level BPE trained on the project's text, `distill.models.loading`): ids 1,024..50,256 are never produced,
which changes no cost of a step. `--quick` / `--tiny` keep the depth and the vocabulary and shrink the width to 32.
"""

from __future__ import annotations

from pathlib import Path

import torch

SIZES = {
    "gpt2": {"n_embd": 768, "n_layer": 12, "n_head": 12},  # 124M parameters
    "gpt2-large": {"n_embd": 1280, "n_layer": 36, "n_head": 20},  # 774M parameters
}
TINY = {"n_embd": 32, "n_head": 2}
"""The widths that replace a size's under `tiny`: the depth and the vocabulary stay."""
VOCAB, POSITIONS = 50257, 1024

# bench_step's `--student` choices on these teachers: (the recipe whose student layers, KD and augment settings are
# used, the teacher's size)
STUDENTS = {
    "gpt2-6L": ("gpt2_to_distilgpt2.yaml", "gpt2"),
    "gpt2-large-18L": ("gpt2-large_to_18L.yaml", "gpt2-large"),
}


def gpt2_tokenizer(cache_dir: str | Path):
    """The project's `embedded:tiny-random` tokenizer, built once under `cache_dir` (no download)."""
    from transformers import AutoTokenizer

    from distill.models.loading import materialize_embedded

    return AutoTokenizer.from_pretrained(materialize_embedded("tiny-random", cache_dir))


def gpt2_config(size: str, tokenizer, tiny: bool = False):
    """transformers' GPT2Config of `size` (a key of SIZES), 50,257 rows, 1,024 positions; `tiny`: 32 wide."""
    from transformers import GPT2Config

    if size not in SIZES:
        raise ValueError(f"GPT-2 size {size!r}: use one of {', '.join(SIZES)}")
    shape = dict(SIZES[size], **(TINY if tiny else {}))
    eos = tokenizer.eos_token_id
    return GPT2Config(
        vocab_size=VOCAB,
        n_positions=POSITIONS,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        **shape,
    )


def random_gpt2(size: str, tokenizer, tiny: bool = False, device="cpu", seed: int = 0):
    """A GPT2LMHeadModel of `size` with random weights (seeded), built on `device` (no copy through host memory)."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    with torch.device(device):
        model = GPT2LMHeadModel(gpt2_config(size, tokenizer, tiny))
    return model.to(device)


def save_random_gpt2(folder: str | Path, size: str, tokenizer, tiny: bool = False) -> Path:
    """Write a random GPT-2 of `size` and the tokenizer to `folder` with save_pretrained (safetensors): a local
    teacher `teacher.name_or_path` can point at. Returns the folder."""
    folder = Path(folder)
    random_gpt2(size, tokenizer, tiny).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def load_gpt2_models(cfg, size: str, tiny: bool, device):
    """(teacher, student, tokenizer): a random GPT-2 teacher of `size` and the recipe's layer-subset student of it,
    both on `device`; the tokenizer's files go under `cfg.data.cache_dir`."""
    from distill.models.loading import build_student

    tok = gpt2_tokenizer(cfg.data.cache_dir)
    device = torch.device(device)
    teacher = random_gpt2(size, tok, tiny, device).eval().requires_grad_(False)
    with torch.device(device):
        student = build_student(cfg.student, teacher, seed=0)
    return teacher, student.to(device).train(), tok
