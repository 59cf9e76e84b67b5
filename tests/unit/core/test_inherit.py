"""Recipe inheritance: `base:` plus the fields that differ, merged deeply; a recipe that inherits resolves to the
same config as when it was written out in full."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
import yaml

from distill.core.errors import ConfigError
from distill.core.inherit import merge
from distill.core.recipe import load_config

ROOT = Path(__file__).resolve().parents[3]
TRAINING = sorted(glob.glob(str(ROOT / "recipes" / "*.yaml")))
# Every shipped recipe resolved before the baselines were rewritten to inherit (`Config.to_dict()`, the config a
# run folder is identified by): inheriting must change none of them.
RESOLVED = json.loads((ROOT / "tests" / "data" / "resolved_recipes.json").read_text())


def test_the_snapshot_covers_every_shipped_recipe():
    assert sorted(RESOLVED) == sorted(Path(r).name for r in TRAINING)


@pytest.mark.parametrize("recipe", TRAINING, ids=lambda p: Path(p).name)
def test_every_recipe_resolves_to_the_config_it_had_when_written_in_full(recipe):
    assert load_config(recipe).to_dict() == RESOLVED[Path(recipe).name]


@pytest.mark.parametrize(
    "recipe", [r for r in TRAINING if r.endswith("_baseline.yaml")], ids=lambda p: Path(p).name
)
def test_baselines_inherit_from_their_method_recipe(recipe):
    data = yaml.safe_load(Path(recipe).read_text())
    assert data["base"] == Path(recipe).name.replace("_baseline", "")
    lines = [ln for ln in Path(recipe).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(lines) <= 6, lines


def test_merge_is_deep_and_replaces_scalars_and_lists():
    base = {"a": {"x": 1, "y": [1, 2], "z": {"k": 1}}, "b": 2}
    child = {"a": {"y": [3], "z": {"j": 2}}, "c": 3}
    assert merge(base, child) == {"a": {"x": 1, "y": [3], "z": {"k": 1, "j": 2}}, "b": 2, "c": 3}
    assert base == {"a": {"x": 1, "y": [1, 2], "z": {"k": 1}}, "b": 2}  # the base is not changed


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_base_is_found_beside_the_recipe_and_chains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not where the recipes are
    _write(
        tmp_path / "r" / "a.yaml",
        "run: {name: a, seed: 3}\nstudent: {layers: [0]}\nkd: {alpha: 0.3, temperature: 3.0}\n",
    )
    _write(tmp_path / "r" / "b.yaml", "base: a.yaml\nkd: {alpha: 0.7}\n")
    c = _write(tmp_path / "r" / "sub" / "c.yaml", "base: ../b.yaml\nrun: {name: c}\n")
    cfg = load_config(c, ["train.max_steps=2"])
    assert (cfg.run.name, cfg.run.seed, cfg.kd.alpha, cfg.kd.temperature) == ("c", 3, 0.7, 3.0)
    assert cfg.train.max_steps == 2 and "base" not in cfg.to_dict()


def test_a_shipped_recipe_name_is_a_base_from_anywhere(tmp_path):
    mine = _write(tmp_path / "mine.yaml", "base: debug.yaml\nrun: {name: mine}\n")
    cfg = load_config(mine)
    expected = load_config(ROOT / "recipes" / "debug.yaml", ["run.name=mine"])
    assert cfg.to_dict() == expected.to_dict()


def test_a_cycle_is_one_clear_error(tmp_path):
    _write(tmp_path / "a.yaml", "base: b.yaml\n")
    b = _write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="recipe bases form a cycle: .*b.yaml -> .*a.yaml -> .*b.yaml"):
        load_config(b)
    me = _write(tmp_path / "me.yaml", "base: me.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(me)


def test_a_missing_base_is_one_clear_error(tmp_path):
    r = _write(tmp_path / "r.yaml", "base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="base 'nowhere.yaml' not found .*`distill recipes` lists them"):
        load_config(r)
    r.write_text("base: [a.yaml]\n")
    with pytest.raises(ConfigError, match="base must be a recipe file name"):
        load_config(r)


def test_problems_in_an_inherited_field_are_still_reported(tmp_path):
    _write(tmp_path / "a.yaml", "kd: {alpah: 0.3}\n")
    b = _write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="did you mean 'kd.alpha'"):
        load_config(b)
