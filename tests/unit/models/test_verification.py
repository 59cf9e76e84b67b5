"""Every model loaded for training or evaluation is verified: its weights cover its config exactly (a layer added
to or dropped from config.json, a tensor of another shape: one error naming the tensors, not transformers' load
report), tied weights are legitimately absent, its tokenizer files are there, data.block_size fits its positions,
and a run is evaluated only with the tokenizer it trained with."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import CORPUS, debug_overrides, make_gpt2, make_llama

from distill.cli import EXIT_USER_ERROR, main
from distill.core.errors import ModelError
from distill.models.loading import load_pretrained, load_tokenizer

SMALL = ["n_per_prompt=1", "max_new_tokens=4", "n_boot=50", "device=cpu", "probe.max_professions=8"]


@pytest.fixture(params=["gpt2", "llama"])
def model_dir(request, tmp_path, tokenizer):
    make = make_gpt2 if request.param == "gpt2" else make_llama
    d = tmp_path / request.param
    make(tokenizer, n_layer=2).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def _set_layers(folder, n):
    config = json.loads((folder / "config.json").read_text())
    config["n_layer" if "n_layer" in config else "num_hidden_layers"] = n
    (folder / "config.json").write_text(json.dumps(config))


def test_tied_weights_are_legitimately_absent(model_dir):
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        assert "lm_head.weight" not in f.keys()  # tied to the input embeddings: not saved
    model = load_pretrained(str(model_dir), "checkpoint", torch.float32)
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


@pytest.mark.parametrize(
    "layers, fragment", [(3, "missing from its weights"), (1, "in its weights but not in")]
)
def test_a_config_that_disagrees_with_its_weights_is_refused(model_dir, capsys, layers, fragment):
    _set_layers(model_dir, layers)
    with pytest.raises(ModelError) as e:
        load_pretrained(str(model_dir), "checkpoint", torch.float32)
    msg = str(e.value)
    prefix = "transformer.h" if "gpt2" in model_dir.name else "model.layers"
    assert "its config.json (" in msg and f"with {layers} layers) and its weights do not match" in msg
    assert f"{fragment}" in msg and f"{prefix}.{max(layers, 2) - 1}.* (" in msg
    assert "restore the config.json saved with these weights" in msg
    assert "LOAD REPORT" not in capsys.readouterr().err  # the error, not transformers' report


def test_a_tensor_of_another_shape_is_named_with_both_shapes(tmp_path, tokenizer):
    d = tmp_path / "m"
    make_gpt2(tokenizer, n_layer=2).save_pretrained(d)
    config = json.loads((d / "config.json").read_text())
    config["vocab_size"] = 500
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ModelError, match=r"of another shape: transformer.wte.weight \(\[400, 16\] in the weights"
    ):
        load_pretrained(str(d), "checkpoint", torch.float32)


def test_eval_of_a_mismatched_model_is_one_error_and_writes_nothing(model_dir, capsys):
    _set_layers(model_dir, 3)
    out = model_dir.parent / "out"
    assert main(["eval", str(model_dir), "--out", str(out), *SMALL]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"error: checkpoint '{model_dir}': its config.json")
    assert "Traceback" not in err and "LOAD REPORT" not in err and not out.exists()


@pytest.mark.parametrize("removed", [["tokenizer.json"], ["tokenizer.json", "tokenizer_config.json"]])
def test_a_model_folder_without_its_tokenizer_says_so(model_dir, capsys, removed):
    for name in removed:
        (model_dir / name).unlink()
    with pytest.raises(ModelError, match=r"holds no tokenizer: none of tokenizer.json, vocab.json"):
        load_tokenizer(str(model_dir))
    assert main(["eval", str(model_dir), "--out", str(model_dir.parent / "out"), *SMALL]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "holds no tokenizer" in err and "Couldn't instantiate" not in err


def _other_tokenizer(size):
    """A tokenizer of the same size trained on other text (the corpus with its words reversed)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([" ".join(w[::-1] for w in s.split()) for s in CORPUS], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def test_a_run_is_evaluated_only_with_the_tokenizer_it_trained_with(tmp_path, teacher_dir, tokenizer):
    from distill.core.recipe import load_config
    from distill.core.rundir import RunDir
    from distill.reporting.evaluate import evaluate_checkpoint
    from distill.training.loop import train

    args = debug_overrides(
        tmp_path, teacher_dir, "train.max_steps=1", "tracking.wandb=false", "train.probe_every=0"
    )
    run_dir = train(load_config("recipes/debug.yaml", args))
    assert RunDir(run_dir).tokenizer_fingerprint() is not None  # recorded with the validation blocks
    other = _other_tokenizer(len(tokenizer))
    assert len(other) == len(tokenizer) and other.get_vocab() != tokenizer.get_vocab()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (run_dir / "final" / name).unlink()
    other.save_pretrained(run_dir / "final")
    before = sorted(p.name for p in run_dir.rglob("*"))
    with pytest.raises(ModelError, match="its tokenizer is not the one the run trained with"):
        evaluate_checkpoint(run_dir, "quick", overrides=SMALL)
    assert sorted(p.name for p in run_dir.rglob("*")) == before
    # the right one evaluates
    tokenizer.save_pretrained(run_dir / "final")
    evaluate_checkpoint(run_dir, "quick", overrides=SMALL)


# ---- positions ------------------------------------------------------------------------------------------------


def test_check_refuses_a_block_longer_than_the_teachers_positions(tmp_path, teacher_dir, capsys):
    args = debug_overrides(tmp_path, teacher_dir, "data.block_size=256")
    assert main(["check", "recipes/debug.yaml", *args]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "data.block_size=256 is more than the 128 positions teacher" in err
    assert "set data.block_size=128 or lower" in err


def test_train_refuses_it_when_only_the_loaded_model_tells(tmp_path, teacher_dir, capsys, monkeypatch):
    """A hub teacher not in the local cache shows its positions only once loaded: refused then, before a step."""
    import distill.training.preflight as preflight

    monkeypatch.setattr(preflight, "teacher_positions", lambda cfg: None)
    args = debug_overrides(tmp_path, teacher_dir, "data.block_size=200", "tracking.wandb=false")
    big = tmp_path / "big.txt"
    big.write_text("\n\n".join(CORPUS * 3))
    assert main(["train", "recipes/debug.yaml", *args, f"data.files=[{big}]"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert (
        err.strip().splitlines()[-1].startswith("error: data.block_size=200 is more than the 128 positions")
    )
    run_dir = tmp_path / "runs" / "debug"
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.jsonl").exists()


def test_the_embedded_models_recorded_positions_are_theirs(tmp_path):
    from distill.models.embedded import EMBEDDED_POSITIONS, materialize_embedded
    from distill.models.loading import positions

    folder = materialize_embedded("tiny-random", tmp_path)
    assert positions(json.loads((folder / "config.json").read_text())) == EMBEDDED_POSITIONS["tiny-random"]
