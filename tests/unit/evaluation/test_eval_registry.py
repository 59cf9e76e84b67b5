"""The metric registry: a new kind is one module plus one YAML (a toy kind goes through suite -> runner -> report
-> model card without any other file changing), and the typed reader of `<suite>.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from test_eval_runner import model_dir  # noqa: F401  (the fixture: a tiny GPT-2 saved as a model folder)

from distill.core.errors import ConfigError, DataError
from distill.evaluation import registry
from distill.evaluation.registry import MetricKind, Row, kinds, register, unregister
from distill.evaluation.results import SuiteResult, read_folder, read_suite
from distill.evaluation.suites import load_suite
from distill.reporting.evaluate import evaluate_checkpoint
from distill.reporting.report import write_report
from distill.reporting.tables import suite_table

pytestmark = pytest.mark.usefixtures("one_thread")

BUILTIN = {
    "generation_disparity",
    "sentiment_gap",
    "pronoun_probe",
    "winogender",
    "perplexity",
    "crows_pairs",
    "stereoset",
    "bias_in_bios",
}


# --------------------------------------------------------------------------------------------------------------
# A toy kind, written as a kind module would be: the share of prompts whose next token is more likely to be
# `word_a` than `word_b`.


@dataclass
class ToyTask:
    """Share of prompts where the model prefers `word_a` to `word_b` as the next token."""

    metric: str = "toy_preference"
    prompts: list[str] | None = None
    """The prompts (null: two built-in ones)."""
    word_a: str = " he"
    word_b: str = " she"
    batch_size: int = 4


def _check(where: str, task: ToyTask, problems: list[str]) -> None:
    if task.word_a == task.word_b:
        problems.append(f"{where}.word_b must differ from word_a, got {task.word_b!r} twice")


def _prepare(name: str, task: ToyTask) -> dict:
    return {"prompts": task.prompts or ["The nurse said that", "The pilot said that"]}


def _run(name: str, task: ToyTask, data: dict, lm, ctx):
    tok = lm.tokenizer
    a, b = (tok(w, add_special_tokens=False)["input_ids"][0] for w in (task.word_a, task.word_b))
    prefer = []
    with torch.inference_mode():
        for prompt in data["prompts"]:
            ids = torch.tensor([tok(prompt)["input_ids"]], device=ctx.device)
            logits = lm.model(input_ids=ids).logits[0, -1]
            prefer.append(bool(logits[a] > logits[b]))
    share = sum(prefer) / len(prefer)
    return {"share": share, "share_ci": [0.0, 1.0], "n": len(prefer), "per_prompt": prefer}, []


def _headline(result: dict) -> dict:
    return {"toy_share": result["share"], "toy_share_ci": result["share_ci"], "n": result["n"]}


TOY = MetricKind(
    name="toy_preference",
    settings=ToyTask,
    prepare=_prepare,
    run=_run,
    headline=_headline,
    rows=(Row("toy_share", "toy: share preferring word_a [95% CI]", "0.5", ci="toy_share_ci"),),
    hidden=("toy_share_ci", "n"),
    check=_check,
)


@pytest.fixture
def toy_kind():
    register(TOY)
    yield TOY
    unregister(TOY.name)


def _suite_file(tmp_path, text: str):
    path = tmp_path / "toy.yaml"
    path.write_text(text)
    return path


def test_every_shipped_kind_is_registered_from_its_module():
    found = kinds()
    assert BUILTIN <= set(found)
    for name, k in found.items():
        assert k.name == name and k.settings.metric == name  # the settings' default metric is the kind
        assert k.run.__module__.startswith("distill.evaluation.metrics."), name
        assert all(isinstance(r, Row) for r in k.rows) and k.rows, name


def test_a_second_kind_under_one_name_is_refused(toy_kind):
    with pytest.raises(ValueError, match="toy_preference.*registered twice"):
        register(MetricKind("toy_preference", ToyTask, _prepare, _run, _headline))
    register(TOY)  # the same kind again is fine (a module imported twice)


def test_a_toy_kind_runs_through_suite_runner_report_and_card(tmp_path, toy_kind, model_dir):  # noqa: F811
    path = _suite_file(
        tmp_path,
        "description: toy suite\nreference: null\ntasks:\n  toy:\n    metric: toy_preference\n    batch_size: 2\n",
    )
    suite = load_suite(
        str(path), ["word_a=' she'", "word_b=' he'"]
    )  # a bare override reaches the toy's fields
    assert isinstance(suite.tasks["toy"], ToyTask) and suite.tasks["toy"].word_a == " she"

    out = tmp_path / "out"
    payload = evaluate_checkpoint(model_dir, str(path), out_dir=out, overrides=["device=cpu"])
    res = read_suite(out / "toy.json")
    assert res.suite == "toy" and res.first("toy_preference").result["n"] == 2
    assert payload["summary"]["toy"]["toy_share"] == res.tasks["toy"].value("toy_share")
    assert [(m.key, m.row.label if m.row else None) for m in res.metrics()] == [
        ("toy_share", "toy: share preferring word_a [95% CI]")
    ]

    table = suite_table([("model", res)])
    share = res.tasks["toy"].value("toy_share")
    assert f"| toy: toy: share preferring word_a [95% CI] | 0.5 | {share:.3g} [0, 1] |" in table
    assert "| toy: n |" not in table  # hidden keys are not rows

    report = write_report([str(out)], out=tmp_path / "report", log_wandb=False).read_text()
    assert "## Suite `toy`" in report and "toy: share preferring word_a" in report


def test_a_kinds_own_check_is_gathered_with_the_others(tmp_path, toy_kind):
    path = _suite_file(
        tmp_path, "tasks:\n  toy:\n    metric: toy_preference\n    word_b: ' he'\n    batch_size: 0\n"
    )
    with pytest.raises(ConfigError) as e:
        load_suite(str(path))
    text = str(e.value)
    assert "tasks.toy.batch_size" in text and "tasks.toy.word_b must differ from word_a" in text


def test_an_unknown_kind_names_the_registered_ones(tmp_path, toy_kind):
    path = _suite_file(tmp_path, "tasks:\n  toy:\n    metric: toy_preferense\n")
    with pytest.raises(ConfigError, match="did you mean 'toy_preference'"):
        load_suite(str(path))


# --------------------------------------------------------------------------------------------------------------
# The typed reader


def _payload(**summary) -> dict:
    return {
        "suite": "s",
        "description": "d",
        "model": {"label": "m"},
        "summary": summary,
        "tasks": {n: {"metric": "pronoun_probe", "seconds": 1.0, "result": {"x": 1}} for n in summary},
    }


def test_the_reader_types_tasks_numbers_and_intervals(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(
        json.dumps(_payload(probe={"pronoun_gap": 0.5, "pronoun_gap_ci": [0.4, 0.6], "n_prompts": 3}))
    )
    res = read_suite(p)
    t = res.first("pronoun_probe")
    assert t.name == "probe" and t.result == {"x": 1} and t.seconds == 1.0
    assert t.value("pronoun_gap") == 0.5 and t.interval("pronoun_gap") == [0.4, 0.6]
    assert t.value("n_prompts") == 3 and t.interval("n_prompts") is None
    assert [m.key for m in res.metrics()] == ["pronoun_gap"]  # the interval and the count are not metrics
    assert res.summary("missing") is None and res.first("perplexity") is None
    assert SuiteResult.of(res) is res


def test_the_reader_says_which_file_is_not_results(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        read_suite(bad)
    other = tmp_path / "other.json"
    other.write_text('{"a": 1}')
    with pytest.raises(DataError, match="other.json: not suite results"):
        read_suite(other)
    bad.unlink()
    (tmp_path / "s.json").write_text(json.dumps(_payload(probe={"pronoun_gap": 0.1})))
    assert list(read_folder(tmp_path)) == ["s"]  # other JSON files in a results folder are skipped


def test_discovery_imports_the_kind_modules_once():
    before = dict(kinds())
    registry._discovered = False
    assert kinds() == before
