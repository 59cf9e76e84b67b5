"""Config: defaults <- recipe <- overrides; every problem reported at once, before any model loads."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

from distill.core.config import AUGMENT_MODES, Config
from distill.core.errors import ConfigError
from distill.core.recipe import load_config, parse_override

ROOT = Path(__file__).resolve().parents[3]
RECIPES = sorted(glob.glob(str(ROOT / "recipes" / "**" / "*.yaml"), recursive=True))
TRAINING_RECIPES = [r for r in RECIPES if "/accelerate/" not in r and "/experiments/" not in r]


def test_found_every_recipe():
    # debug (tiny random) and smoke (its SmolLM2 twin); embedded SmolLM2-135M (6 layers; 24 pruned); GPT-2 124M, medium, large, xl; SmolLM2 360M, 1.7B: each with
    # its _baseline twin. Update when recipes are added.
    assert len(TRAINING_RECIPES) == 18, TRAINING_RECIPES


@pytest.mark.parametrize("recipe", TRAINING_RECIPES, ids=lambda p: Path(p).name)
def test_every_recipe_validates(recipe):
    cfg = load_config(recipe)
    assert isinstance(cfg, Config)
    first_line = Path(recipe).read_text().splitlines()[0]
    assert first_line.startswith("# recipes/"), "a recipe says what it is for on its first line"


def test_baseline_twins_switch_the_method_off():
    for base in [r for r in TRAINING_RECIPES if r.endswith("_baseline.yaml")]:
        twin = base.replace("_baseline.yaml", ".yaml")
        b, m = load_config(base), load_config(twin)
        assert b.augment.mode == "off" and b.perturb.kind == "none"
        assert m.augment.mode == "append" and m.perturb.kind == "mean" and m.perturb.lam == 0.5
        assert b.kd.log_ratio == 0  # the log-ratio term is part of the method, so the baseline turns it off
        b.kd.log_ratio = m.kd.log_ratio
        assert (b.student, b.train, b.kd, b.data) == (m.student, m.train, m.kd, m.data)


def test_overrides_apply_and_parse_yaml_values():
    cfg = load_config(
        "recipes/debug.yaml",
        ["kd.alpha=0.7", "student.layers=[0, 1]", "augment.mode=off", "train.max_steps=3"],
    )
    assert cfg.kd.alpha == 0.7
    assert cfg.student.layers == [0, 1]
    assert cfg.augment.mode == "off"  # YAML reads a bare `off` as false; it means the mode
    assert cfg.train.max_steps == 3


def test_bare_yaml_booleans_name_the_literal_they_spell():
    cfg = load_config("recipes/debug.yaml", ["train.mixed_precision=no"])
    assert cfg.train.mixed_precision == "no"  # YAML 1.1 reads a bare `no` as false
    with pytest.raises(ConfigError, match="tracking.mode must be one of"):
        load_config("recipes/debug.yaml", ["tracking.mode=yes"])


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"unknown key 'kd.alpah'; did you mean 'kd.alpha'"):
        load_config("recipes/debug.yaml", ["kd.alpah=0.5"])


def test_unknown_section_suggests():
    with pytest.raises(ConfigError, match=r"did you mean 'perturb'"):
        load_config("recipes/debug.yaml", ["perturbb.kind=mean"])


def test_all_problems_gathered_at_once():
    with pytest.raises(ConfigError) as e:
        load_config(
            "recipes/debug.yaml",
            ["kd.alpah=2", "train.lr=abc", "augment.mode=apend", "kd.alpha=1.5", "student.layers=[0, 0]"],
        )
    msg = str(e.value)
    assert len(e.value.problems) == 5
    assert "recipes/debug.yaml" in msg
    assert "kd.alpha must be in [0, 1], got 1.5" in msg
    assert "train.lr must be a number, got 'abc'" in msg
    assert "did you mean 'append'" in msg
    assert "repeated" in msg


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("kd.temperature=0", "kd.temperature must be in [0.01, 100.0]"),
        ("augment.p=2", "augment.p must be in [0, 1]"),
        ("perturb.kind=avg", "perturb.kind must be one of"),
        ("train.micro_batch_size=0", "train.micro_batch_size must be in [1"),
        ("train.betas=[0.9]", "train.betas must be two numbers"),
        ("train.max_steps=null", "both null"),
        ("train.max_tokens=1000", "both set"),
        ("run.name=../escape", "run.name '../escape' may hold only"),
        ("teacher.name_or_path=embedded:nope", "unknown embedded model"),
        ("student.init=pretrained", "student.path is required"),
        ("student.layers=null", "student.layers is required"),
        ("data.source=hf", "data.name is required"),
        ("data.block_size=1.5", "data.block_size must be an integer"),
        ("train.log_every=true", "train.log_every must be an integer"),
        ("augment.pairs=word_lists/missing.tsv", "word list 'word_lists/missing.tsv' does not exist"),
    ],
)
def test_bad_values_are_named(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("recipes/debug.yaml", [override])
    assert fragment in str(e.value)


def test_allowed_values_come_from_the_checked_constant():
    with pytest.raises(ConfigError) as e:
        load_config("recipes/debug.yaml", ["augment.mode=sometimes"])
    for mode in AUGMENT_MODES:
        assert repr(mode) in str(e.value)


def test_missing_recipe_file():
    with pytest.raises(ConfigError, match="recipe file not found: recipes/nope.yaml"):
        load_config("recipes/nope.yaml")


def test_recipe_that_is_not_a_mapping(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(p)
    p.write_text("kd: {alpha: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


@pytest.mark.parametrize("bad", ["kd.alpha", "=3", "kd..alpha=1", "1kd=2"])
def test_malformed_overrides(bad):
    with pytest.raises(ConfigError):
        parse_override(bad)


# ---- recipe files as bytes: encodings, duplicate keys, folders ------------------------------------------------


@pytest.mark.parametrize(
    "blob, fragment",
    [
        ("# café\nkd: {alpha: 0.5}\n".encode("latin-1"), "line 1: byte 0xe9 is not UTF-8"),
        ("kd: {alpha: 0.5}\n# café\n".encode("utf-16"), "the recipe is UTF-16"),
        ("kd: {alpha: 0.5}\n".encode("utf-16-be"), "the recipe is UTF-16"),
    ],
)
def test_a_recipe_that_is_not_utf8_names_the_encoding(tmp_path, blob, fragment):
    p = tmp_path / "r.yaml"
    p.write_bytes(blob)
    with pytest.raises(ConfigError, match=fragment) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: ") and "save the recipe as UTF-8" in str(e.value)
    assert p.read_bytes() == blob  # the file is only read


def test_a_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_bytes("\ufeff# café\nkd: {alpha: 0.25}\nstudent: {layers: [0, 1]}\n".encode())
    assert load_config(p).kd.alpha == 0.25


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("kd:\n  alpha: 0.5\n  temperature: 2.0\n  alpha: 0.9\ntrain: {lr: 1.0e-3, lr: 2.0e-3}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.problems == [
        "key 'kd.alpha' is given twice (lines 2 and 4); keep one of them",
        "key 'train.lr' is given twice (lines 5 and 5); keep one of them",
    ]


def test_a_wrong_type_is_one_problem_not_two():
    with pytest.raises(ConfigError) as e:
        load_config("recipes/debug.yaml", ["train.max_steps=1.5", "student.layers=0,29"])
    assert e.value.problems == [
        "student.layers must be a list (an integer each) or null, got '0,29'; write a list in brackets, e.g. [0,29]",
        "train.max_steps must be an integer or null, got 1.5",
    ]


def test_a_folder_is_not_a_recipe_and_the_hint_lists_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the checkout: `ls recipes/` would list nothing here
    with pytest.raises(ConfigError, match=r"recipe 'recipes' is a folder; give one recipe file") as e:
        load_config("recipes")
    assert "debug.yaml" in str(e.value)
    with pytest.raises(ConfigError, match=r"recipe file not found: nope.yaml; shipped recipes \(in /") as e:
        load_config("nope.yaml")
    assert "debug.yaml" in str(e.value) and "ls recipes" not in str(e.value)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n# and a document marker\n"])
def test_an_empty_recipe_says_it_is_empty(tmp_path, text):
    p = tmp_path / "empty.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "the recipe is empty (nothing but comments or blank lines)" in str(e.value)
    assert "student.layers" not in str(e.value)


def test_what_is_not_a_recipe_file_is_named_for_what_it_is(tmp_path):
    import os

    loop = tmp_path / "loop.yaml"
    os.symlink(tmp_path / "other.yaml", loop)
    os.symlink(loop, tmp_path / "other.yaml")
    dangling = tmp_path / "dangling.yaml"
    os.symlink(tmp_path / "gone.yaml", dangling)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    cases = {
        str(loop): "is a symbolic link that loops",
        str(dangling): f"is a symbolic link to '{tmp_path / 'gone.yaml'}', which does not exist",
        str(fifo): "is a named pipe (FIFO), not a file",
        "/dev/null": "is a character device, not a file",
        "-": "a recipe is read from a file, not from standard input",
    }
    for recipe, fragment in cases.items():
        with pytest.raises(ConfigError) as e:
            load_config(recipe)
        assert fragment in str(e.value) and "not found" not in str(e.value), (recipe, str(e.value))


@pytest.mark.parametrize("name", ["-x", ".hidden", "..", "_x"])
def test_a_run_name_must_start_with_a_letter_or_digit(name):
    with pytest.raises(ConfigError) as e:
        load_config("recipes/debug.yaml", [f"run.name={name}"])
    assert f"run.name {name!r} must start with a letter or digit" in str(e.value)
    assert "e.g. run.name=" in str(e.value)


@pytest.mark.parametrize("override", ["teacher.trust_remote_code=true", "teacher={trust_remote_code: true}"])
def test_trust_remote_code_is_refused_on_the_command_line(override):
    with pytest.raises(ConfigError) as e:
        load_config("recipes/debug.yaml", [override])
    assert "teacher.trust_remote_code: true is refused on the command line" in str(e.value)
    assert "only from a recipe file" in str(e.value)
    assert (
        load_config("recipes/debug.yaml", ["teacher.trust_remote_code=false"]).teacher.trust_remote_code
        is False
    )


def test_trust_remote_code_from_a_recipe_file_is_taken(tmp_path):
    p = tmp_path / "remote.yaml"
    p.write_text(
        Path(ROOT / "recipes" / "debug.yaml")
        .read_text()
        .replace(
            'teacher: {name_or_path: "embedded:tiny-random"}',
            "teacher: {name_or_path: x, trust_remote_code: true}",
        )
    )
    assert load_config(p, ["kd.alpha=0.7"]).teacher.trust_remote_code is True
