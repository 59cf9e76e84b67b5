"""Tests for distill.training.erase: which positions count as gender-neutral, the eraser's algebra, the fold into
GPT-2 and Llama weights (a plain Hugging Face model after), `student.erase` at export and `distill erase`."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import debug_overrides, make_gpt2, make_llama

from distill.core.errors import ConfigError
from distill.core.recipe import load_config
from distill.counterfactual.wordlists import load_lexicon
from distill.training import erase as E

LEX = load_lexicon(names="word_lists/names.tsv")
FEMALE = LEX.female_words() | {f for _, f in LEX.names}
MALE = LEX.male_words() | {m for m, _ in LEX.names}


def _states(tokenizer, text: str) -> list[tuple[str, int]]:
    ids = tokenizer(text)["input_ids"]
    out = E.cue_states(tokenizer, torch.tensor([ids]), FEMALE, MALE, tokenizer.eos_token_id)[0].tolist()
    return [(tokenizer.decode([i]), s) for i, s in zip(ids, out)]


def test_positions_are_neutral_until_a_gendered_word_and_again_after_eos(tokenizer) -> None:
    eos = tokenizer.eos_token
    states = _states(
        tokenizer, f"The nurse said that he would come.{eos}The doctor met the king and her work"
    )
    words = [w for w, _ in states]
    he, eos_at, king, her = words.index(" he"), words.index(eos), words.index(" king"), words.index(" her")
    assert all(s == 0 for _, s in states[:he])
    assert all(s == -1 for _, s in states[he:eos_at])
    assert all(s == 0 for _, s in states[eos_at:king])
    assert all(s == -1 for _, s in states[king:her])
    assert all(s == 1 for _, s in states[her:])


def test_a_word_split_into_tokens_counts_from_its_last_token(tokenizer) -> None:
    ids = tokenizer(" niece")["input_ids"]
    assert len(ids) > 1  # the fixture's BPE splits the rare " niece"
    states = _states(tokenizer, "The doctor met the niece")
    k = len(ids)
    assert [s for _, s in states[:-1]] == [0] * (len(states) - 1)  # its first pieces are not a word yet
    assert states[-1][1] == 1
    assert "".join(w for w, _ in states[-k:]) == " niece"
    # a word that only starts like a gendered one ("theme", "hedge" hold "he") is not a cue
    assert all(s == 0 for _, s in _states(tokenizer, "The theme and the hedge"))


def _stats(n: int = 4000, d: int = 6, seed: int = 0, sink: bool = True):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g)
    mix = torch.randn(2, d, generator=g)
    m = torch.randn(n, d, generator=g) * torch.linspace(0.5, 3.0, d) + z @ mix + 5.0
    cue = torch.zeros(n, dtype=torch.int8)
    cue[: n // 10] = 1
    cue[n // 10 : n // 5] = -1
    if sink:
        cue[n // 5 : n // 5 + 20] = E.SINK
    m[: n // 10] += torch.tensor([2.0, 0, 0, 0, 1.0, 0])  # the context's gender
    m[n // 5 : n // 5 + 20] *= 40.0  # an attention sink's huge writes
    st = E.EraseStats()
    for s in range(0, n, 1000):  # accumulated in pieces, as over batches
        st.add(m[s : s + 1000], z[s : s + 1000], cue[s : s + 1000])
    return st, m[cue == 0], z[cue == 0]


@pytest.mark.parametrize("keep_context", [False, True])
def test_the_eraser_removes_the_cross_covariance_and_protects_what_it_must(keep_context: bool) -> None:
    st, m, z = _stats(sink=keep_context)  # without anything to protect, the covariance goes entirely
    A, removed = E.leace(st, rank=2, keep_context=keep_context)
    mu = m.double().mean(0)
    erased = m.double() - (m.double() - mu) @ A.T
    cov = ((erased - erased.mean(0)).T @ (z.double() - z.double().mean(0))) / len(z)
    before = ((m.double() - mu).T @ (z.double() - z.double().mean(0))) / len(z)
    assert torch.linalg.matrix_rank(A, atol=1e-8) == 2
    if not keep_context:
        assert removed == pytest.approx(1.0, abs=1e-9)
        assert cov.abs().max() < 1e-9 * before.abs().max() + 1e-9
    else:  # one direction is kept, so part of the covariance may remain; never more than before
        assert 0 < removed <= 1 + 1e-9
        assert torch.allclose(A @ st.context_direction(), torch.zeros(6, dtype=A.dtype), atol=1e-8)
        assert torch.allclose(A @ st.sink_direction(), torch.zeros(6, dtype=A.dtype), atol=1e-7)
    # the mean of the neutral positions is kept: erased m has the same mean
    assert torch.allclose(erased.mean(0), mu, atol=1e-9)


def test_fit_refuses_a_rank_below_one_and_too_few_positions(tokenizer) -> None:
    model = make_gpt2(tokenizer)
    blocks = torch.tensor([tokenizer("He said that she left")["input_ids"]])
    with pytest.raises(ValueError, match="rank must be >= 1"):
        E.fit(model, tokenizer, blocks, FEMALE, MALE, LEX.pairs, None, 0)
    with pytest.raises(ValueError, match="too few to fit rank"):
        E.fit(model, tokenizer, blocks, FEMALE, MALE, LEX.pairs, None, 1)


def _blocks(tokenizer, n: int = 12, t: int = 24) -> torch.Tensor:
    from conftest import CORPUS

    ids = tokenizer(" ".join(CORPUS[:80]))["input_ids"]
    return torch.tensor(ids[: n * t]).reshape(n, t)


@pytest.mark.parametrize("make", [make_gpt2, make_llama])
def test_the_edit_is_the_eraser_on_the_first_edited_layer_and_a_plain_model_after(make, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    model = make(tokenizer, n_layer=4).eval()
    blocks = _blocks(tokenizer)
    er = E.fit(model, tokenizer, blocks, FEMALE, MALE, LEX.pairs, [2, 3], rank=1)
    assert sorted(er.edits) == [2, 3]
    mlps = E._mlp_modules(model)
    seen = {}
    hook = mlps[2].register_forward_hook(lambda _m, _a, out: seen.__setitem__("m", out.detach().clone()))
    with torch.no_grad():
        model(input_ids=blocks)
    before = seen["m"]
    E.apply(model, er)
    with torch.no_grad():
        logits = model(input_ids=blocks).logits
    hook.remove()
    A, shift = er.edits[2]
    assert torch.allclose(seen["m"], before - before @ A.T + shift, atol=1e-4)
    # untouched layers keep their weights; the result saves and loads as a plain model with the same outputs
    model.save_pretrained(tmp_path / "m")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        assert torch.allclose(again(input_ids=blocks).logits, logits, atol=1e-5)


def test_an_architecture_without_a_known_mlp_is_refused() -> None:
    with pytest.raises(ValueError, match="supports the Llama family"):
        E._mlp_modules(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_student_erase_at_export_and_distill_erase_on_a_finished_run(tmp_path, teacher_dir, capsys):
    from distill.cli import main
    from distill.training.loop import train

    def cfg(out, *extra):
        return load_config(
            "recipes/debug.yaml",
            debug_overrides(out, teacher_dir, "data.val_fraction=0.1", "train.max_steps=3", *extra),
        )

    plain = train(cfg(tmp_path / "a"))
    erased = train(cfg(tmp_path / "b", "student.erase.rank=1"))
    report = json.loads((erased / "erase.json").read_text())
    assert report["rank"] == 1 and report["neutral_positions"] > 0 and report["val_ppl_after"] > 0
    assert not (plain / "erase.json").exists()
    from safetensors.torch import load_file

    w_plain = load_file(str(plain / "final" / "model.safetensors"))
    w_erased = load_file(str(erased / "final" / "model.safetensors"))
    assert any(not torch.equal(w_plain[k], w_erased[k]) for k in w_plain)
    # the command on the finished plain run gives the same weights as erasing at export
    out = tmp_path / "c" / "erased"
    assert main(["erase", str(plain), "--out", str(out)]) == 0
    w_cmd = load_file(str(out / "final" / "model.safetensors"))
    assert all(torch.allclose(w_cmd[k], w_erased[k], atol=1e-6) for k in w_erased)
    saved = load_config(out / "config.yaml")
    assert saved.student.erase.rank == 1 and saved.run.name == "erased"
    assert (out / "val_blocks.safetensors").is_file() and (out / "identity.json").is_file()
    # the run's last val/ppl is the erased student's (what the five-seed tables read), in both ways of erasing
    from distill.core.files import read_jsonl

    for run, rep in ((out, json.loads((out / "erase.json").read_text())), (erased, report)):
        last = [r for r in read_jsonl(run / "metrics.jsonl") if "val/ppl" in r][-1]
        assert last["val/ppl"] == pytest.approx(rep["val_ppl_after"])
        assert last["erase/val_ppl_before"] == pytest.approx(rep["val_ppl_before"])
    assert "erasure (rank 1)" in (out / "final" / "README.md").read_text()
    # what it refuses, before any work: a folder in use, a rank of 0, a run without final/
    for args, needle in (
        (["--out", str(out)], "already exists and is not empty"),
        (["--out", str(tmp_path / "d"), "student.erase.rank=0"], "nothing to erase"),
    ):
        capsys.readouterr()
        assert main(["erase", str(plain), *args]) != 0
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    with pytest.raises(ConfigError, match="no final/"):
        E.erase_run(tmp_path, tmp_path / "e", [])
