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
    import distill.models.loading

    def boom(*a, **k):
        raise AssertionError("the teacher must not load")

    monkeypatch.setattr(distill.models.loading, "load_teacher", boom)
    assert _train(tmp_path, "/unused", f"data.files=[{f}]") == EXIT_USER_ERROR
    assert "no field 'text' (found ['body']); set data.text_field" in capsys.readouterr().err


def test_empty_dataset(tmp_path, teacher_dir, capsys):
    f = tmp_path / "empty.txt"
    f.write_text("\n\n")
    assert _train(tmp_path, teacher_dir, f"data.files=[{f}]") == EXIT_USER_ERROR
    assert "empty.txt: holds no text (empty, or whitespace only)" in capsys.readouterr().err


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


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "runs/x", "--suite", "quick", "a.b=1", "c=2"],
        ["eval", "runs/x", "a.b=1", "--suite", "quick", "c=2"],
        ["eval", "runs/x", "a.b=1", "c=2", "--suite", "quick"],
        ["eval", "--suite", "quick", "runs/x", "a.b=1", "c=2"],
    ],
)
def test_eval_takes_options_and_overrides_in_any_order(argv):
    from distill.cli import parse_args

    args = parse_args(argv)
    assert (args.ckpt, args.suite, args.overrides) == ("runs/x", "quick", ["a.b=1", "c=2"])


def test_an_unknown_option_is_still_refused(capsys):
    from distill.cli import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(["eval", "runs/x", "--suite", "quick", "--nope", "a=1"])
    assert e.value.code == 2 and "unrecognized arguments: --nope" in capsys.readouterr().err


def test_the_resume_hint_repeats_the_command_that_was_run(monkeypatch):
    from distill.cli import invocation

    monkeypatch.delenv("FAIRDISTILL_COMMAND", raising=False)
    monkeypatch.setattr("sys.argv", ["/venv/bin/distill"])
    assert (
        invocation(["train", "my recipe.yaml", "kd.alpha=0.7"])
        == "distill train 'my recipe.yaml' kd.alpha=0.7"
    )
    monkeypatch.setattr("sys.argv", ["/x/distill/cli.py"])
    assert invocation(["train", "r.yaml"]) == "python -m distill.cli train r.yaml"
    monkeypatch.setenv("FAIRDISTILL_COMMAND", "make distill RECIPE=r.yaml")
    assert invocation(["train", "r.yaml"]) == "make distill RECIPE=r.yaml"


def test_report_goes_beside_the_runs_not_into_the_working_directory(tmp_path, monkeypatch, capsys):
    from test_eval_report import _payload

    for name in ("a", "b"):
        (tmp_path / "runs" / name / "eval").mkdir(parents=True)
        payload = _payload(name, "student", f"runs/{name}", [0.5, 0.4, None], [0.2, 0.1, 0.3], 30.0)
        (tmp_path / "runs" / name / "eval" / "quick.json").write_text(json.dumps(payload))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert main(["report", "runs/a", "runs/b"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "runs" / "report" / "report.md")
    assert not (tmp_path / "report").exists()


def test_evaluated_checkpoints_are_named_by_absolute_path(tmp_path, teacher_dir, monkeypatch):
    from distill.evaluation.runner import _absolute, load_model, resolve_checkpoint

    monkeypatch.chdir(teacher_dir.parent)
    lm = load_model(resolve_checkpoint(teacher_dir.name), "cpu", role="model")
    assert lm.info["checkpoint"] == str(teacher_dir.resolve())
    assert _absolute("embedded:smollm2-135m") == "embedded:smollm2-135m" and _absolute("gpt2") == "gpt2"
