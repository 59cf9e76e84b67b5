"""Every shipped recipe validates and builds its student at the true depth (tiny width, no download, no weights of
note); every Accelerate config parses with Accelerate's own loader; the numbers in the recipes' comments match
their settings.

The teachers' real depths come from their config.json on the hub, written down here because tests never download.
"""

from __future__ import annotations

import glob
import math
import re
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from distill.core.recipe import load_config
from distill.models.loading import build_student

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(glob.glob(str(ROOT / "recipes" / "**" / "*.yaml"), recursive=True))
TRAINING = [r for r in RECIPES if "/accelerate/" not in r and "/experiments/" not in r]
ACCELERATE = [r for r in RECIPES if "/accelerate/" in r]
LADDER = [r for r in TRAINING if re.search(r"/(gpt2-|smollm2-(360m|1\.7b))", r)]

# teacher -> (architecture, number of layers), from each model's config.json
TEACHERS = {
    "gpt2": ("gpt2", 12),
    "gpt2-medium": ("gpt2", 24),
    "gpt2-large": ("gpt2", 36),
    "gpt2-xl": ("gpt2", 48),
    "embedded:smollm2-135m": ("llama", 30),
    "embedded:tiny-random": ("llama", 4),
    "HuggingFaceTB/SmolLM2-360M": ("llama", 32),
    "HuggingFaceTB/SmolLM2-1.7B": ("llama", 24),
}


def test_found_every_recipe():
    names = sorted(Path(r).name for r in TRAINING)
    # debug (tiny random) and smoke (on SmolLM2-135M); embedded SmolLM2-135M (6 layers, and 24 pruned); GPT-2 ladder (124M, medium, large, xl); SmolLM2 360M
    # and 1.7B: each + _baseline
    assert len(TRAINING) == 18, names
    assert len(LADDER) == 10, LADDER
    assert len(ACCELERATE) == 9, [Path(r).name for r in ACCELERATE]


def _tiny_teacher(arch: str, depth: int):
    """The teacher's architecture at its real depth, 8 wide: the layer map is exercised, nothing is downloaded."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_layer=depth, n_embd=8, n_head=2, vocab_size=64, n_positions=32))
    return LlamaForCausalLM(
        LlamaConfig(
            num_hidden_layers=depth,
            hidden_size=8,
            intermediate_size=16,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=64,
            max_position_embeddings=32,
            tie_word_embeddings=True,
        )
    )


@pytest.mark.parametrize("recipe", TRAINING, ids=lambda p: Path(p).name)
def test_recipe_builds_its_student_at_true_depth(recipe):
    cfg = load_config(recipe)
    assert cfg.teacher.name_or_path in TEACHERS, f"add {cfg.teacher.name_or_path}'s depth to TEACHERS"
    arch, depth = TEACHERS[cfg.teacher.name_or_path]
    assert cfg.student.init == "teacher_layers"
    teacher = _tiny_teacher(arch, depth)
    if cfg.student.prune.drop:  # ranked on the teacher: here on random blocks of its tiny stand-in
        from distill.models.pruning import prune_layers

        blocks = torch.randint(
            0, 64, (cfg.student.prune.blocks, 16), generator=torch.Generator().manual_seed(0)
        )
        with tempfile.TemporaryDirectory() as cache:
            picked = prune_layers(cfg.student, teacher, blocks, cache)
        layers = picked["layers"]
        assert (
            len(layers) == depth - cfg.student.prune.drop and len(picked["dropped"]) == cfg.student.prune.drop
        )
        student = build_student(cfg.student, teacher, seed=cfg.run.seed, layers=layers)
    else:
        layers = cfg.student.layers
        # the layer map: strictly increasing teacher indices from the first layer to the last
        assert layers[0] == 0 and layers[-1] == depth - 1, layers
        student = build_student(cfg.student, teacher, seed=cfg.run.seed)
    assert all(a < b for a, b in zip(layers, layers[1:])), layers
    assert student.config.model_type == teacher.config.model_type
    assert student.config.num_hidden_layers == len(layers)
    blocks = student.transformer.h if arch == "gpt2" else student.model.layers
    teacher_blocks = teacher.transformer.h if arch == "gpt2" else teacher.model.layers
    assert len(blocks) == len(layers)
    for i, j in enumerate(layers):
        for (name, p), q in zip(blocks[i].named_parameters(), teacher_blocks[j].parameters()):
            assert torch.equal(p, q.float()), (i, j, name)


_BUDGET = re.compile(
    r"Budget: ([\d.e]+) tokens of x = ([\d,]+) steps of (\d+) rows x (\d+) accum x (\d+) GPUs x ([\d,]+) tokens"
)


def _with_base(recipe: str) -> str:
    """A recipe's text, then its base's (`base:`): what a baseline that inherits says, and what it inherits."""
    own = Path(recipe).read_text()
    base = (yaml.safe_load(own) or {}).get("base")
    return own + (Path(recipe).with_name(base).read_text() if base else "")


@pytest.mark.parametrize("recipe", LADDER, ids=lambda p: Path(p).name)
def test_ladder_comments_match_settings(recipe):
    """The comment's budget arithmetic is the recipe's own, and it states memory and time (docs/scaling.md). A
    baseline that inherits its method's recipe (`base:`) states its own time and memory; the budget is its base's."""
    own, text = Path(recipe).read_text(), _with_base(recipe)
    cfg = load_config(recipe)
    m = _BUDGET.search(text)
    assert m, "a ladder recipe states its budget: 'Budget: D tokens of x = S steps of ...'"
    tokens, steps, rows, accum, gpus, block = m.groups()
    assert float(tokens) == cfg.train.max_tokens and cfg.train.max_steps is None
    assert (int(rows), int(accum), int(block.replace(",", ""))) == (
        cfg.train.micro_batch_size,
        cfg.train.grad_accum,
        cfg.data.block_size,
    )
    per_step = cfg.train.micro_batch_size * cfg.train.grad_accum * int(gpus) * cfg.data.block_size
    # the loop's own rule: ceil(max_tokens / tokens per step)
    assert int(steps.replace(",", "")) == math.ceil(cfg.train.max_tokens / per_step)
    assert re.search(r"about [\d.]+ h \([\d.]+ GPU-hours\)", own), "expected time"
    assert re.search(r"about \d+ GiB per", own), "expected GPU memory"
    size = Path(recipe).stem.removesuffix("_baseline")
    assert f"| `{size}` |" in (ROOT / "docs" / "scaling.md").read_text(), "the memory/time table lists it"


@pytest.mark.parametrize("config", ACCELERATE, ids=lambda p: Path(p).name)
def test_accelerate_config_parses(config):
    from accelerate.commands.config.config_args import load_config_from_file

    c = load_config_from_file(config)  # raises on a key Accelerate does not know
    assert Path(config).read_text().startswith("#"), "each config says what it is for"
    assert c.num_processes % c.num_machines == 0
    kind = str(c.distributed_type).split(".")[-1]
    name = Path(config).name
    if name.startswith("fsdp") or name.startswith("multinode_fsdp"):
        assert kind == "FSDP"
        fsdp = c.fsdp_config
        full_shard = (
            fsdp.get("fsdp_reshard_after_forward") is True
            or fsdp.get("fsdp_sharding_strategy") == "FULL_SHARD"
        )
        assert full_shard and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    if name.startswith("deepspeed"):
        assert kind == "DEEPSPEED"
        ds = c.deepspeed_config
        assert ds["zero_stage"] == int(re.search(r"zero(\d)", name).group(1))
        assert ds["gradient_accumulation_steps"] == 1  # fairdistill refuses accumulation under DeepSpeed
    if name.startswith("multinode"):
        assert c.num_machines > 1 and c.main_process_port


def test_every_ladder_size_has_a_multi_gpu_config():
    names = {Path(c).name for c in ACCELERATE}
    assert {
        "fsdp_8gpu.yaml",
        "fsdp1_8gpu.yaml",
        "deepspeed_zero2_8gpu.yaml",
        "deepspeed_zero3_8gpu.yaml",
    } <= names
    assert {"multinode_fsdp.yaml", "ddp_8gpu.yaml", "single_gpu.yaml", "cpu_multiprocess.yaml"} <= names
    for recipe in LADDER:
        launch = re.search(r"ACCELERATE_CONFIG=(recipes/accelerate/\S+\.yaml)", _with_base(recipe))
        assert launch and (ROOT / launch.group(1)).is_file(), recipe
