"""The command line: one clear message and a non-zero exit for bad input, before any model loads."""

from __future__ import annotations

import json

import pytest
from conftest import debug_overrides

from distill.cli import EXIT_USER_ERROR, main


def _train(tmp_path, teacher_dir, *extra):
    base = debug_overrides(tmp_path, teacher_dir, "train.max_steps=1", "tracking.wandb=false", *extra)
    return main(["train", "recipes/debug.yaml", *base])


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["kd.alpah=0.5"], "did you mean 'kd.alpha'"),
        (["train.lr=fast"], "train.lr must be a number, got 'fast'"),
        (["data.files=[nope/missing.txt]"], "'nope/missing.txt' matches no file"),
        (["augment.pairs=word_lists/missing.tsv"], "word list 'word_lists/missing.tsv' does not exist"),
        (["teacher.name_or_path=/nonexistent/teacher"], "is not a directory"),
        (["student.init=pretrained", "student.path=/nonexistent/student"], "is not a directory"),
    ],
)
def test_bad_input_exits_with_one_message(tmp_path, teacher_dir, capsys, extra, fragment):
    assert _train(tmp_path, teacher_dir, *extra) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and fragment in err and "Traceback" not in err


def test_dataset_without_text_field_fails_before_the_teacher_loads(tmp_path, capsys, monkeypatch):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"body": "hello"}) + "\n")
    import distill.models

    def boom(*a, **k):
        raise AssertionError("the teacher must not load")

    monkeypatch.setattr(distill.models, "load_teacher", boom)
    assert _train(tmp_path, "/unused", f"data.files=[{f}]") == EXIT_USER_ERROR
    assert "no field 'text' (found ['body']); set data.text_field" in capsys.readouterr().err


def test_empty_dataset(tmp_path, teacher_dir, capsys):
    f = tmp_path / "empty.txt"
    f.write_text("\n\n")
    assert _train(tmp_path, teacher_dir, f"data.files=[{f}]") == EXIT_USER_ERROR
    assert "transfer text is empty" in capsys.readouterr().err


def test_malformed_word_list_fails_at_start(tmp_path, teacher_dir, capsys):
    w = tmp_path / "pairs.tsv"
    w.write_text("he\tshe\nhe\tqueen\n")
    assert _train(tmp_path, teacher_dir, f"augment.pairs={w}") == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "pairs.tsv:2" in err


def test_vocabulary_mismatch(tmp_path, teacher_dir, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path / "student"
    GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2)).save_pretrained(d)
    assert _train(tmp_path, teacher_dir, "student.init=pretrained", f"student.path={d}") == EXIT_USER_ERROR
    assert "teacher vocab (" in capsys.readouterr().err


def test_check_prints_the_resolved_config(capsys):
    assert main(["check", "recipes/debug.yaml", "kd.alpha=0.7"]) == 0
    assert "alpha: 0.7" in capsys.readouterr().out
