"""Suites: every shipped YAML validates, `quick` needs no hub, overrides reach the right tasks, and every kind of
mistake gets one clear ConfigError (with a "did you mean" where a name is close)."""

from __future__ import annotations

import dataclasses
import glob
from pathlib import Path

import pytest

from distill.core.errors import ConfigError
from distill.evaluation.metrics.generation_disparity import DisparityTask
from distill.evaluation.metrics.perplexity import PerplexityTask
from distill.evaluation.metrics.pronoun_agreement import PronounAgreementTask
from distill.evaluation.metrics.pronoun_probe import PronounProbeTask
from distill.evaluation.metrics.winogender import WinogenderTask
from distill.evaluation.registry import kinds as metric_kinds
from distill.evaluation.suites import Suite, list_suites, load_suite, suite_from_dict

METRICS = {name: k.settings for name, k in metric_kinds().items()}

ROOT = Path(__file__).resolve().parents[3]
SUITE_FILES = sorted(glob.glob(str(ROOT / "eval" / "*.yaml")))
HUB_FIELDS = ("path", "train_path", "test_path")


def test_found_every_suite():
    # bold_professions, bold_gender, bold_seeds, templates, pronoun_probe, perplexity, bias_in_bios, crows_pairs,
    # stereoset, quick, winogender, method: update when suites are added.
    assert len(SUITE_FILES) == 12, SUITE_FILES
    assert list_suites() == sorted(Path(f).stem for f in SUITE_FILES)


@pytest.mark.parametrize("path", SUITE_FILES, ids=lambda p: Path(p).name)
def test_every_suite_validates_and_says_what_it_is_for(path):
    suite = load_suite(path)
    assert isinstance(suite, Suite) and suite.tasks
    assert suite.name == Path(path).stem
    assert suite.description.strip()
    first_line = Path(path).read_text().splitlines()[0]
    assert first_line.startswith(f"# eval/{Path(path).name}:"), (
        "a suite says what it is for on its first line"
    )
    for task in suite.tasks.values():
        assert type(task) is METRICS[task.metric]


def test_every_metric_kind_has_a_shipped_suite():
    used = {t.metric for name in list_suites() for t in load_suite(name).tasks.values()}
    assert used == set(METRICS)


def test_quick_templates_and_bold_need_no_hub():
    for name in ("quick", "templates", "pronoun_probe", "bold_professions", "bold_gender", "bold_seeds"):
        for task in load_suite(name).tasks.values():
            for f in HUB_FIELDS:
                if hasattr(task, f):
                    assert getattr(task, f), (
                        f"{name}: {f} must name a local file for the suite to run offline"
                    )


def test_quick_measures_disparity_probe_perplexity_and_fluency():
    quick = load_suite("quick")
    kinds = {type(t) for t in quick.tasks.values()}
    assert kinds == {DisparityTask, PronounProbeTask, PerplexityTask, WinogenderTask, PronounAgreementTask}
    gen = quick.tasks["templates"]
    assert gen.fluency and quick.reference == "teacher"
    assert (gen.n_per_prompt, gen.max_new_tokens, gen.max_per_group) == (3, 24, 4)
    assert quick.tasks["perplexity"].run_validation


def test_bare_override_reaches_every_task_with_the_field_and_dotted_one_task():
    suite = load_suite("quick", ["batch_size=3", "probe.max_professions=8", "device=cpu", "n_per_prompt=1"])
    assert {t.batch_size for t in suite.tasks.values()} == {3}
    assert suite.tasks["probe"].max_professions == 8
    assert suite.tasks["templates"].n_per_prompt == 1
    assert suite.device == "cpu"
    assert suite.overrides == ["batch_size=3", "probe.max_professions=8", "device=cpu", "n_per_prompt=1"]
    assert suite.to_dict()["tasks"]["templates"]["n_per_prompt"] == 1


def test_override_values_are_yaml():
    suite = load_suite("quick", ["probe.max_professions=null", "templates.groups=[nursing_specialties]"])
    assert suite.tasks["probe"].max_professions is None
    assert suite.tasks["templates"].groups == ["nursing_specialties"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("n_per_promt=1", r"no task in this suite has a field 'n_per_promt'; did you mean 'n_per_prompt'"),
        ("templats.seed=1", r"no task named 'templats'; did you mean 'templates'"),
        (
            "templates.n_per_promt=1",
            r"unknown key 'tasks.templates.n_per_promt'; did you mean 'tasks.templates.n_per_prompt'",
        ),
        ("top_p=1.5", r"tasks.templates.top_p must be in \(0, 1\], got 1.5"),
        ("templates.domain=professions", r"domain must be one of .*did you mean 'profession'"),
        ("templates.n_per_prompt=two", r"tasks.templates.n_per_prompt must be an integer, got 'two'"),
        ("perplexity.path=no/such/file.txt", r"tasks.perplexity.path: 'no/such/file.txt' does not exist"),
        ("device=gpu0", r"device must be 'auto' or a torch device"),
        ("kd.alpha.x=1", r"use <field>=value"),
    ],
)
def test_bad_override_gets_a_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_suite("quick", [override])


def test_bad_suite_file_gathers_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "# bad.yaml\n"
        "descripton: typo\n"
        "tasks:\n"
        "  gen: {metric: generation_disparity, n_per_prompt: 0, top_k: 5}\n"
        "  senti: {metric: sentiment_gap, path: eval/data/profession_templates.json, groups: [a]}\n"
        "  probe: {metric: pronoun_probes}\n"
        "  nometric: {batch_size: 2}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_suite(str(bad))
    text = str(err.value)
    assert text.startswith(f"{bad}: 6 problems")
    assert "unknown key 'descripton'; did you mean 'description'" in text
    assert "unknown key 'tasks.gen.top_k'; did you mean 'tasks.gen.top_p'" in text
    assert "tasks.senti.groups must name exactly two groups" in text
    assert "tasks.probe.metric must be one of" in text and "did you mean 'pronoun_probe'" in text
    assert "tasks.nometric.metric is required" in text
    assert "tasks.gen.n_per_prompt must be in [1, inf], got 0" in text


def test_range_errors_list_every_field(tmp_path):
    bad = tmp_path / "ranges.yaml"
    bad.write_text(
        "tasks:\n  gen: {metric: generation_disparity, n_per_prompt: 0, max_new_tokens: 0, top_p: 0}\n"
    )
    with pytest.raises(ConfigError, match="3 problems") as err:
        load_suite(str(bad))
    for f in ("n_per_prompt", "max_new_tokens", "top_p"):
        assert f"tasks.gen.{f}" in str(err.value)


def test_unknown_suite_name_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"unknown suite 'quik'; did you mean 'quick'"):
        load_suite("quik")


def test_a_suite_needs_tasks():
    with pytest.raises(ConfigError, match="tasks must be a non-empty mapping"):
        suite_from_dict({"description": "nothing"}, "empty")
    with pytest.raises(ConfigError, match="a suite must be a mapping"):
        suite_from_dict(["tasks"], "listy")


def test_readme_documents_every_suite_and_field():
    readme = (ROOT / "eval" / "README.md").read_text()
    section = readme[readme.index("## Suites, the runner and the report") :]
    for name in list_suites():
        assert f"`{name}`" in section, f"eval/README.md does not list suite {name}"
    for metric, cls in METRICS.items():
        assert f"`{metric}`" in section
        for f in dataclasses.fields(cls):
            if f.name != "metric":
                assert f"`{f.name}`" in section, f"eval/README.md does not document {metric}.{f.name}"
