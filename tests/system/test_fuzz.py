"""Fuzzing the loaders: any recipe, override or word-list line is accepted or rejected with the project's own
error type and a message; never another exception."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.core.config import Config
from distill.core.errors import ConfigError, FairDistillError, WordListError
from distill.core.recipe import config_from_dict, load_config, parse_override
from distill.counterfactual.wordlists import load_lexicon

SECTIONS = [
    "run",
    "teacher",
    "student",
    "data",
    "kd",
    "augment",
    "perturb",
    "probe",
    "train",
    "tracking",
    "eval",
]
KEYS = [
    "name",
    "alpha",
    "temperature",
    "mode",
    "p",
    "kind",
    "lam",
    "layers",
    "init",
    "lr",
    "max_steps",
    "betas",
    "block_size",
    "files",
    "source",
    "seed",
    "wandb",
    "tags",
    "max_tokens",
    "pairs",
    "name_or_path",
    "typo",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["off", "append", "mean", "teacher_layers", "hf", "files", "3e-4"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
recipes = st.dictionaries(
    st.sampled_from(SECTIONS) | st.text(max_size=10),
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), values, max_size=5) | values,
    max_size=6,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(recipes)
def test_any_recipe_dict_is_accepted_or_rejected_cleanly(data):
    try:
        cfg = config_from_dict(data, "fuzz.yaml")
    except ConfigError as e:
        assert str(e).startswith("fuzz.yaml: ")
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)
    else:
        assert isinstance(cfg, Config)


@FUZZ
@given(st.text(max_size=60))
def test_any_override_text(text):
    try:
        parse_override(text)
    except ConfigError as e:
        assert text in str(e) or repr(text) in str(e) or "override" in str(e)


@FUZZ
@given(st.lists(st.text(alphabet=st.sampled_from("akx.=_[]{}:,0123 -'\"\\n"), max_size=25), max_size=4))
def test_any_override_list_on_the_debug_recipe(overrides):
    try:
        load_config("recipes/debug.yaml", overrides)
    except ConfigError:
        pass


@FUZZ
@given(st.text(max_size=300))
def test_any_recipe_text(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("r") / "recipe.yaml"
    p.write_text(text, encoding="utf-8")
    try:
        load_config(p)
    except ConfigError:
        pass


line = st.text(alphabet=st.sampled_from("abhesrm\t #'-Z1é\n"), max_size=30)


@FUZZ
@given(st.lists(line, max_size=6))
def test_any_word_list_lines(tmp_path_factory, lines):
    d = tmp_path_factory.mktemp("w")
    pairs = d / "pairs.tsv"
    pairs.write_text("\n".join(lines), encoding="utf-8")
    try:
        lex = load_lexicon(pairs, one_to_many=None)
    except WordListError as e:
        assert "pairs.tsv" in str(e)
    else:
        assert lex.pairs
        for m, f in lex.pairs:
            assert m.isalpha() and f.isalpha() and m != f


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200))
def test_any_word_list_bytes(tmp_path_factory, blob):
    pairs = tmp_path_factory.mktemp("b") / "pairs.tsv"
    pairs.write_bytes(blob)
    try:
        load_lexicon(pairs, one_to_many=None)
    except FairDistillError:
        pass


def test_yaml_special_values_survive():
    # `off`, `no`, `3e-4`: YAML 1.1 quirks a user will type
    cfg = config_from_dict(
        yaml.safe_load("augment: {mode: off}\ntrain: {lr: 3e-4}\nstudent: {layers: [0, 1]}\n")
    )
    assert cfg.augment.mode == "off" and cfg.train.lr == 3e-4


@settings(max_examples=150, deadline=None)
@given(
    st.binary(max_size=200)
    | st.text(max_size=120).flatmap(
        lambda t: st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "latin-1", "cp1252"]).map(
            lambda enc: t.encode(enc, errors="replace")
        )
    )
)
def test_any_recipe_bytes(tmp_path_factory, blob):
    p = tmp_path_factory.mktemp("rb") / "recipe.yaml"
    p.write_bytes(blob)
    try:
        load_config(p)
    except ConfigError as e:
        assert str(e).startswith(f"{p}: ")


# ---- recipe values: NaN, infinities, huge and negative numbers in every numeric field -------------------------


def _numeric_fields(node=None, prefix=""):
    import dataclasses

    node = node if node is not None else Config()
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if f.metadata.get("internal"):
            continue
        if dataclasses.is_dataclass(value):
            yield from _numeric_fields(value, f"{prefix}{f.name}.")
        elif isinstance(value, int | float) and not isinstance(value, bool) or value is None:
            yield f"{prefix}{f.name}"


NUMERIC_FIELDS = sorted(_numeric_fields())
# What a hostile-but-realistic user types: YAML's own spellings of NaN and infinity, numbers past a float's range,
# integers past 64 bits, negatives, zero, and the tiny and huge ends of each type.
hostile_numbers = st.one_of(
    st.sampled_from(
        [".nan", ".NaN", ".inf", "-.inf", "+.inf", "1e999", "-1e999", "1e300", "-1e-300", "0", "-0.0"]
    ),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: repr(f).replace("nan", ".nan").replace("inf", ".inf")
    ),
)


def _accepted_is_sane(cfg: Config) -> None:
    """A recipe that loads holds finite floats, 64-bit integers and numpy-range seeds only."""
    import math

    from distill.core.recipe import SEED_MAX

    for name in NUMERIC_FIELDS:
        value = cfg
        for part in name.split("."):
            value = getattr(value, part)
        if isinstance(value, float):
            assert math.isfinite(value), (name, value)
        elif isinstance(value, int):
            assert abs(value) <= 2**63 - 1, (name, value)
    assert 0 <= cfg.run.seed <= SEED_MAX
    assert all(math.isfinite(b) for b in cfg.train.betas)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(NUMERIC_FIELDS), hostile_numbers, st.booleans())
def test_any_number_in_any_field_is_accepted_sanely_or_named(tmp_path_factory, field, text, in_file):
    """The same value through a recipe file (YAML scalar written as is) or an override: either the recipe loads
    with every number finite and in range, or one ConfigError names the field."""
    import yaml as _yaml

    from distill.core.recipe import read_recipe

    if in_file:
        data = read_recipe("recipes/debug.yaml")
        section, key = field.split(".", 1)
        node = data.setdefault(section, {})
        for part in key.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[key.split(".")[-1]] = "VALUE_HERE"
        path = tmp_path_factory.mktemp("v") / "recipe.yaml"
        path.write_text(_yaml.safe_dump(data, sort_keys=False).replace("VALUE_HERE", text))
        load = lambda: load_config(path)  # noqa: E731
    else:
        load = lambda: load_config("recipes/debug.yaml", [f"{field}={text}"])  # noqa: E731
    try:
        cfg = load()
    except ConfigError as e:
        assert any(field in p for p in e.problems), (field, text, e.problems)
    else:
        _accepted_is_sane(cfg)
