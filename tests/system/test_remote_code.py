"""A teacher that ships its own Python code: a local folder whose modeling and tokenization files each write a
marker file when imported, so the test sees whether that code ever ran. It runs only from a recipe file's
`teacher.trust_remote_code: true` confirmed with --trust-remote-code; `check` reports it without running it; the
student's final/ never carries it; a teacher whose architecture exists only in its own code is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import debug_overrides, make_gpt2

from distill.cli import EXIT_USER_ERROR, main

ROOT = Path(__file__).resolve().parents[2]

MODELING = """
import pathlib
pathlib.Path({marker!r}).write_text("modeling code ran")
from transformers import GPT2Config, GPT2LMHeadModel


class CustomForCausalLM(GPT2LMHeadModel):
    config_class = GPT2Config
"""
TOKENIZATION = """
import pathlib
pathlib.Path({marker!r}).write_text("tokenizer code ran")
from transformers import PreTrainedTokenizerFast


class CustomTokenizer(PreTrainedTokenizerFast):
    pass
"""


def _remote_teacher(folder: Path, tokenizer, marker: Path, model_type: str = "gpt2") -> Path:
    make_gpt2(tokenizer, n_layer=4).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "modeling_custom.py").write_text(MODELING.format(marker=str(marker)))
    (folder / "tokenization_custom.py").write_text(TOKENIZATION.format(marker=str(marker) + ".tokenizer"))
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    config["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    tok["auto_map"] = {"AutoTokenizer": [None, "tokenization_custom.CustomTokenizer"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok))
    return folder


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "REMOTE_CODE_RAN"


@pytest.fixture
def remote_teacher(tmp_path, tokenizer, marker):
    return _remote_teacher(tmp_path / "remote_teacher", tokenizer, marker)


def _ran(marker: Path) -> bool:
    return marker.exists() or Path(str(marker) + ".tokenizer").exists()


def _recipe(tmp_path, teacher: Path, trust: bool) -> Path:
    text = (ROOT / "recipes" / "debug.yaml").read_text()
    line = 'teacher: {name_or_path: "embedded:tiny-random"}'
    assert line in text
    recipe = tmp_path / "remote.yaml"
    recipe.write_text(
        text.replace(line, f"teacher: {{name_or_path: {teacher}, trust_remote_code: {str(trust).lower()}}}")
    )
    return recipe


def _args(tmp_path, teacher):
    extra = ["train.max_steps=2", "tracking.wandb=false", "train.probe_every=0", "train.eval_every=0"]
    return [o for o in debug_overrides(tmp_path, teacher, *extra) if not o.startswith("teacher.")]


def test_unconfirmed_it_is_refused_before_anything_runs_or_is_written(
    tmp_path, remote_teacher, marker, capsys
):
    recipe = _recipe(tmp_path, remote_teacher, trust=True)
    assert main(["train", str(recipe), *_args(tmp_path, remote_teacher)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "teacher.trust_remote_code is true in" in err and "confirm with --trust-remote-code" in err
    assert "modeling_custom.py, tokenization_custom.py" in err
    assert not _ran(marker) and not (tmp_path / "runs").exists()


def test_on_the_command_line_it_is_refused(tmp_path, remote_teacher, marker, capsys):
    args = [*_args(tmp_path, remote_teacher), f"teacher.name_or_path={remote_teacher}"]
    assert (
        main(["train", "recipes/debug.yaml", *args, "teacher.trust_remote_code=true", "--trust-remote-code"])
        == 2
    )
    assert "refused on the command line" in capsys.readouterr().err
    assert not _ran(marker) and not (tmp_path / "runs").exists()


def test_check_reports_it_without_running_it(tmp_path, remote_teacher, marker, capsys):
    recipe = _recipe(tmp_path, remote_teacher, trust=True)
    assert main(["check", str(recipe), *_args(tmp_path, remote_teacher)]) == 0
    err = capsys.readouterr().err
    assert "ships its own code (modeling_custom.py, tokenization_custom.py)" in err
    assert "train runs it once confirmed with --trust-remote-code" in err
    assert "saved as transformers' own 'gpt2' architecture" in err
    assert not _ran(marker)


def _no_code_in(final: Path) -> None:
    assert not list(final.glob("*.py")), sorted(p.name for p in final.iterdir())
    for name in ("config.json", "tokenizer_config.json"):
        assert "auto_map" not in json.loads((final / name).read_text()), name
    assert json.loads((final / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]


def test_without_trust_the_teacher_loads_with_transformers_code(tmp_path, remote_teacher, marker):
    recipe = _recipe(tmp_path, remote_teacher, trust=False)
    assert main(["train", str(recipe), *_args(tmp_path, remote_teacher)]) == 0
    assert not _ran(marker)
    _no_code_in(tmp_path / "runs" / "debug" / "final")


def test_confirmed_it_runs_and_the_student_does_not_carry_it(tmp_path, remote_teacher, marker, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = _recipe(tmp_path, remote_teacher, trust=True)
    assert main(["train", str(recipe), *_args(tmp_path, remote_teacher), "--trust-remote-code"]) == 0
    err = capsys.readouterr().err
    warned = err.index("teacher.trust_remote_code is on, confirmed: the Python code shipped with")
    assert warned < err.index("resolved config")  # warned before anything of the run, the tokenizer included
    assert marker.exists()  # the teacher's own code did run, as confirmed
    final = tmp_path / "runs" / "debug" / "final"
    _no_code_in(final)
    marker.unlink()
    Path(str(marker) + ".tokenizer").unlink()
    # whoever loads the student, even trusting remote code, runs none of the teacher's
    model = AutoModelForCausalLM.from_pretrained(final, trust_remote_code=True)
    tok = AutoTokenizer.from_pretrained(final, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers.") and type(tok).__module__.startswith(
        "transformers."
    )
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(remote_teacher).get_vocab()
    assert not _ran(marker)


def test_an_architecture_only_its_own_code_has_is_refused(tmp_path, tokenizer, capsys):
    marker = tmp_path / "RAN"
    teacher = _remote_teacher(tmp_path / "custom_arch", tokenizer, marker, model_type="custom_gpt")
    recipe = _recipe(tmp_path, teacher, trust=True)
    for command in (["check", str(recipe)], ["train", str(recipe), "--trust-remote-code"]):
        assert main([*command, *_args(tmp_path, teacher)]) == EXIT_USER_ERROR
        err = capsys.readouterr().err
        assert "its model_type 'custom_gpt' exists only in its own code" in err
        assert "students as transformers' own architectures only" in err
    assert not _ran(marker) and not (tmp_path / "runs").exists()
    # evaluating such a folder says why it cannot load, not "re-save it with save_pretrained"
    assert main(["eval", str(teacher), "--out", str(tmp_path / "out"), "device=cpu"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "loads only with its own Python code (modeling_custom.py, tokenization_custom.py" in err
    assert "re-save" not in err and not _ran(marker)
