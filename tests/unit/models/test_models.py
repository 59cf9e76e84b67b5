"""Teacher loading and student construction: copied layers equal the teacher's; mismatches are clear errors."""

from __future__ import annotations

import pytest
import torch
from conftest import make_gpt2, make_llama

from distill.core.config import StudentConfig
from distill.core.errors import ModelError
from distill.core.recipe import load_config
from distill.models.loading import build_student, check_vocab, load_teacher, student_from_teacher_layers


@pytest.mark.parametrize("make", [make_gpt2, make_llama], ids=["gpt2", "llama"])
def test_teacher_layers_copies_the_chosen_layers(tokenizer, make):
    teacher = make(tokenizer, n_layer=4, seed=1)
    layers = [0, 3]
    student = student_from_teacher_layers(teacher, layers)
    assert student.config.num_hidden_layers == 2
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    blocks = "transformer.h" if "transformer.h.0.attn.c_attn.weight" in t_sd else "model.layers"
    n_checked = 0
    for key, value in s_sd.items():
        if key.startswith(blocks + "."):
            idx = int(key.split(".")[2])
            src = key.replace(f"{blocks}.{idx}.", f"{blocks}.{layers[idx]}.", 1)
        else:
            src = key
        assert torch.equal(value, t_sd[src]), key
        n_checked += 1
    assert n_checked == len(s_sd)
    # embeddings and head stay tied, as in the teacher
    assert (
        student.get_output_embeddings().weight.data_ptr() == student.get_input_embeddings().weight.data_ptr()
    )
    # the copied student computes what the teacher computes with those layers: same first layer output shape
    x = torch.randint(0, len(tokenizer), (2, 8))
    assert student(x).logits.shape == teacher(x).logits.shape


def test_layer_out_of_range(tokenizer):
    teacher = make_gpt2(tokenizer, n_layer=4)
    with pytest.raises(ModelError, match=r"the teacher has 4 layers \(0..3\); \[7\] do not exist"):
        student_from_teacher_layers(teacher, [0, 7])


def test_student_from_config_and_pretrained(tokenizer, tmp_path):
    teacher = make_gpt2(tokenizer, n_layer=4)
    s = build_student(StudentConfig(init="config", num_layers=3, config_overrides={"n_embd": 8}), teacher)
    assert s.config.num_hidden_layers == 3 and s.config.n_embd == 8
    d = tmp_path / "student"
    s.save_pretrained(d)
    again = build_student(StudentConfig(init="pretrained", path=str(d)), teacher)
    for (k, a), (_, b) in zip(s.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_unknown_config_override(tokenizer):
    teacher = make_gpt2(tokenizer, n_layer=2)
    with pytest.raises(ModelError, match="has no field 'hidden_sizee'"):
        build_student(StudentConfig(init="config", config_overrides={"hidden_sizee": 8}), teacher)


def test_vocab_mismatch_is_named(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    teacher = make_gpt2(tokenizer, n_layer=2)
    other = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer) + 3, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(
        ModelError, match=rf"teacher vocab \({len(tokenizer)}\) != student vocab \({len(tokenizer) + 3}\)"
    ):
        check_vocab(teacher, other)


def test_teacher_from_local_dir_round_trip(teacher_dir):
    cfg = load_config("recipes/debug.yaml", [f"teacher.name_or_path={teacher_dir}"])
    teacher, tok, path = load_teacher(cfg)
    assert path == str(teacher_dir)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert tok.pad_token is not None


def test_missing_and_pickled_checkpoints(tmp_path, tokenizer):
    cfg = load_config("recipes/debug.yaml", [f"teacher.name_or_path={tmp_path}"])
    with pytest.raises(ModelError, match="has no config.json"):
        load_teacher(cfg)
    model = make_gpt2(tokenizer)
    model.save_pretrained(tmp_path)
    for f in tmp_path.glob("*.safetensors"):
        f.unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # a pickled checkpoint
    with pytest.raises(ModelError, match="pickled weights are refused"):
        load_teacher(cfg)


def test_truncated_checkpoint(tmp_path, tokenizer):
    make_gpt2(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    w = next(tmp_path.glob("*.safetensors"))
    w.write_bytes(w.read_bytes()[:100])
    cfg = load_config("recipes/debug.yaml", [f"teacher.name_or_path={tmp_path}"])
    with pytest.raises(ModelError, match="could not be loaded"):
        load_teacher(cfg)


def test_hub_id_offline_is_a_clear_error():
    cfg = load_config("recipes/debug.yaml", ["teacher.name_or_path=someone/not-cached-model"])
    with pytest.raises(ModelError, match="someone/not-cached-model"):
        load_teacher(cfg)
