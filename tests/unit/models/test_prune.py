"""student.prune: block influence on tiny models (a layer that does nothing scores 0 and is dropped), the
selection rule, the cache, config errors, and a short training run whose student is chosen that way."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import debug_overrides, make_gpt2, make_llama

from distill.core.config import StudentConfig
from distill.core.errors import ConfigError, ModelError
from distill.core.recipe import load_config
from distill.models.pruning import block_influence, check_prune, decoder_layers, prune_layers, prune_selection


def _silence(model, index: int) -> None:
    """Zero the output projections of block `index`: its residual stream passes through unchanged."""
    block = decoder_layers(model)[index]
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith(
                ("o_proj.weight", "down_proj.weight", "attn.c_proj.weight", "mlp.c_proj.weight")
            ) or (name.endswith("c_proj.bias")):
                p.zero_()


@pytest.mark.parametrize("make", [make_gpt2, make_llama], ids=["gpt2", "llama"])
def test_a_layer_that_changes_nothing_has_zero_influence(tokenizer, make):
    model = make(tokenizer, n_layer=4, seed=3)
    _silence(model, 2)
    blocks = torch.randint(0, len(tokenizer), (5, 12), generator=torch.Generator().manual_seed(0))
    scores = block_influence(model, blocks, batch_size=2)
    assert len(scores) == 4
    assert abs(scores[2]) < 1e-5
    assert all(s > 1e-3 for i, s in enumerate(scores) if i != 2), scores
    assert block_influence(model, blocks, batch_size=5) == pytest.approx(
        scores, abs=1e-5
    )  # batching changes nothing


@pytest.mark.parametrize(
    "scores, drop, kept, dropped",
    [
        ([0.5, 0.1, 0.3, 0.2], 2, [0, 2], [1, 3]),
        ([0.5, 0.1, 0.3, 0.2], 0, [0, 1, 2, 3], []),
        ([0.2, 0.2, 0.2, 0.9], 1, [0, 1, 3], [2]),  # ties: the later layer goes first
        ([0.9, 0.1], 1, [0], [1]),
    ],
)
def test_selection_drops_the_lowest_scores_and_keeps_order(scores, drop, kept, dropped):
    assert prune_selection(scores, drop) == (kept, dropped)


def test_selection_must_leave_a_layer():
    with pytest.raises(ModelError, match="must leave at least one of the teacher's 2 layers"):
        prune_selection([0.1, 0.2], 2)


def test_prune_layers_caches_its_scores(tmp_path, tokenizer):
    teacher = make_llama(tokenizer, n_layer=4, seed=3)
    _silence(teacher, 1)
    blocks = torch.randint(0, len(tokenizer), (10, 12), generator=torch.Generator().manual_seed(0))
    cfg = StudentConfig(init="teacher_layers")
    cfg.prune.drop, cfg.prune.blocks = 1, 4
    first = prune_layers(cfg, teacher, blocks, tmp_path)
    assert first["dropped"] == [1] and first["layers"] == [0, 2, 3] and not first["cached"]
    assert first["blocks"] == [4, 12]
    cached = tmp_path / "prune" / f"{first['key']}.json"
    assert json.loads(cached.read_text())["scores"] == first["scores"]
    again = prune_layers(cfg, teacher, blocks, tmp_path)
    assert again["cached"] and again["scores"] == first["scores"] and again["layers"] == first["layers"]
    # other blocks or other weights are another cache entry
    assert prune_layers(cfg, teacher, blocks[4:], tmp_path)["key"] != first["key"]
    with torch.no_grad():
        decoder_layers(teacher)[0].mlp.up_proj.weight.mul_(2.0)
    assert prune_layers(cfg, teacher, blocks, tmp_path)["key"] != first["key"]


def test_check_prune_names_the_teacher_depth(tokenizer):
    cfg = StudentConfig(init="teacher_layers")
    cfg.prune.drop = 4
    with pytest.raises(
        ModelError, match=r"student.prune.drop \(4\) must leave at least one of the teacher's 4 layers"
    ):
        check_prune(cfg, make_gpt2(tokenizer, n_layer=4))


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (
            ["student.prune.drop=2"],
            "and student.prune.drop (2) both choose the layers",
        ),
        (["student.layers=null", "student.prune.drop=-1"], "student.prune.drop must be in [0, inf], got -1"),
        (
            ["student.layers=null", "student.prune.drop=2", "student.prune.by=magnitude"],
            "student.prune.by must be one of block_influence",
        ),
        (
            ["student.layers=null", "student.prune.drop=2", "student.prune.blocks=0"],
            "student.prune.blocks must be in [1, inf], got 0",
        ),
        (
            ["student.layers=null", "student.init=config", "student.prune.drop=2"],
            "needs student.init: teacher_layers",
        ),
        (["student.layers=null"], "or let student.prune: {drop: N, by: block_influence} choose them"),
        (["student.layers=null", "student.prune.drop=two"], "student.prune.drop"),
    ],
)
def test_bad_prune_settings_are_named(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("recipes/debug.yaml", overrides)
    assert fragment in str(e.value)


def test_prune_without_a_list_validates():
    cfg = load_config(
        "recipes/debug.yaml", ["student.layers=null", "student.prune={drop: 6, by: block_influence}"]
    )
    assert cfg.student.prune.drop == 6 and cfg.student.layers is None


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_run_with_a_pruned_student(tmp_path, teacher_dir):
    from transformers import AutoModelForCausalLM

    from distill.core.files import read_jsonl
    from distill.training.loop import train

    cfg = load_config(
        "recipes/debug.yaml",
        debug_overrides(
            tmp_path,
            teacher_dir,
            "student.layers=null",
            "student.prune.drop=2",
            "student.prune.blocks=4",
            "train.max_steps=2",
            "tracking.wandb=false",
        ),
    )
    run_dir = train(cfg)
    pruned = json.loads((run_dir / "prune.json").read_text())
    assert len(pruned["scores"]) == 4 and len(pruned["dropped"]) == 2 and len(pruned["layers"]) == 2
    assert sorted(pruned["layers"] + pruned["dropped"]) == [0, 1, 2, 3]
    assert AutoModelForCausalLM.from_pretrained(run_dir / "final").config.num_hidden_layers == 2
    recs = read_jsonl(run_dir / "metrics.jsonl")
    assert "probe/stereo_r_bls" in recs[0] and "probe/teacher_stereo_spread" in recs[0]
    assert "probe/stereo_r_teacher" in recs[-1]
