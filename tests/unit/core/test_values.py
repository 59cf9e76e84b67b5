"""Recipe values: no NaN or infinity gets past the recipe's coercion however it arrives (YAML `.nan`, `.inf`,
`1e999`, an override, an integer too large for a float), and every range keeps the maths finite (temperatures,
seeds within numpy's range, weight decay against the learning rate, 64-bit integers)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import yaml

from distill.core.config import Config
from distill.core.errors import ConfigError
from distill.core.recipe import load_config, read_recipe
from distill.evaluation.suites import load_suite


def _float_fields(node=None, prefix=""):
    """Dotted names of every float field of the recipe schema (and float list items, as `train.betas`)."""
    node = node if node is not None else Config()
    for f in dataclasses.fields(node):
        if f.metadata.get("internal"):
            continue
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            yield from _float_fields(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            yield f"{prefix}{f.name}"


FLOAT_FIELDS = sorted(_float_fields())


def _recipe_with(tmp_path, dotted: str, text: str):
    """recipes/debug.yaml with `dotted` set to the YAML scalar `text` (written as is: `.nan`, `1e999`)."""
    data = read_recipe("recipes/debug.yaml")
    section, key = dotted.split(".")
    data.setdefault(section, {})[key] = "VALUE_HERE"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False).replace("VALUE_HERE", text))
    return path


def test_the_schema_has_the_float_fields_the_issue_names():
    for name in ("kd.alpha", "kd.temperature", "augment.p", "train.lr", "data.val_fraction", "perturb.lam"):
        assert name in FLOAT_FIELDS


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize(
    "text, shown", [(".nan", "nan"), (".inf", "inf"), ("-.inf", "-inf"), ("1e999", "1e999")]
)
def test_a_recipe_file_cannot_give_a_float_field_nan_or_infinity(tmp_path, field, text, shown):
    path = _recipe_with(tmp_path, field, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"{field} must be a finite number, got {shown}" in str(e.value)
    assert "give a number such as" in str(e.value)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("augment.p=.nan", "augment.p must be a finite number, got nan"),
        ("kd.alpha=.nan", "kd.alpha must be a finite number, got nan"),
        ("train.lr=-.inf", "train.lr must be a finite number, got -inf"),
        ("kd.temperature=1e999", "kd.temperature must be a finite number, got 1e999"),
        (
            "kd.temperature=" + "9" * 400,
            "kd.temperature must be a finite number, got 99999999... (400 digits)",
        ),
        ("train.betas=[.nan, 0.9]", "train.betas[0] must be a finite number, got nan"),
        (
            "student.config_overrides={hidden_size: .inf}",
            "student.config_overrides.hidden_size must be a finite",
        ),
    ],
)
def test_an_override_cannot_give_nan_or_infinity_either(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("recipes/debug.yaml", [override])
    assert fragment in str(e.value)
    assert len(e.value.problems) == 1  # one mistake, one problem (no follow-on "betas must be two numbers")


@pytest.mark.parametrize(
    "override, fragment",
    [
        (
            "kd.temperature=1e300",
            "kd.temperature must be in [0.01, 100.0] (logits / T and T**2 stay finite), got 1e+300",
        ),
        ("kd.temperature=0", "kd.temperature must be in [0.01, 100.0]"),
        ("data.sample_temperature=1e-30", "data.sample_temperature must be in [0.01, 100.0]"),
        ("run.seed=-1", "run.seed must be in [0, 4294967295] (numpy's seed range), got -1"),
        ("run.seed=99999999999999999999", "run.seed must be in [0, 4294967295] (numpy's seed range)"),
        ("data.seed=4294967296", "data.seed must be in [0, 4294967295]"),
        ("kd.changed_weight=1e30", "kd.changed_weight must be in [0, 1000.0]"),
        ("train.lr=5", "train.lr must be in (0, 1]"),
        ("train.weight_decay=2000", "train.lr x train.weight_decay must be below 1, got 0.001 x 2000 = 2"),
        ("data.block_size=99999999999999999999", "data.block_size must be an integer within +-(2**63 - 1)"),
    ],
)
def test_every_range_keeps_the_maths_finite(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("recipes/debug.yaml", [override])
    assert fragment in str(e.value)
    assert len(e.value.problems) == 1


def test_the_largest_seeds_numpy_takes_are_accepted():
    import numpy as np

    cfg = load_config("recipes/debug.yaml", ["run.seed=4294967295", "data.seed=0"])
    np.random.seed(cfg.run.seed)  # the bound is numpy's own


def test_accepted_values_are_finite():
    cfg = load_config("recipes/debug.yaml", ["kd.temperature=100", "train.lr=3e-4"])
    assert all(math.isfinite(v) for v in (cfg.kd.temperature, cfg.train.lr, *cfg.train.betas))


@pytest.mark.parametrize("override", ["temperature=.nan", "top_p=.inf", "temperature=1e-30"])
def test_a_suite_refuses_them_through_the_same_coercion(override):
    with pytest.raises(ConfigError) as e:
        load_suite("quick", [override])
    key = override.split("=")[0]
    # a bare key reaches every task that has it: quick's two generation tasks, templates and bold
    assert f"tasks.templates.{key} must" in str(e.value) and f"tasks.bold.{key} must" in str(e.value)
    assert len(e.value.problems) == 2
    load_suite("quick", ["temperature=0"])  # 0 is greedy, not a division by zero


def test_each_process_seed_stays_in_numpys_range():
    from distill.core.errors import FairDistillError
    from distill.training.lifecycle import check_seed

    check_seed(2**32 - 1, 1)
    check_seed(2**32 - 2, 2)
    with pytest.raises(
        FairDistillError, match=r"run.seed=4294967295 with 2 processes: .*use run.seed <= 4294967294"
    ):
        check_seed(2**32 - 1, 2)
