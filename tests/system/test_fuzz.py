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
