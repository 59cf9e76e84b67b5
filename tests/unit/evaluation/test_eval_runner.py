"""The suite runner on tiny local GPT-2s: `quick` offline on a model folder and on a run directory (teacher vs
student), every other metric kind through local files in the datasets' published formats, strict JSON, the
texts behind the numbers, and a clear error when a hub-only suite runs offline."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from conftest import debug_overrides, make_gpt2

from distill.core.errors import DataError, ModelError
from distill.core.files import read_jsonl, to_strict_json
from distill.core.recipe import load_config, save_config
from distill.evaluation.polarity import classify_gender, gender_word_lists
from distill.evaluation.runner import resolve_checkpoint
from distill.reporting.evaluate import evaluate_checkpoint, evaluate_run

# Test-sized `quick`: 18 groups x 4 prompts (6 of BOLD's) x 1 sample of 4 tokens, 8 professions, 40 real-text
# sentences, few bootstrap resamples.
GEN_SMALL = ["n_per_prompt=1", "max_new_tokens=4", "n_boot=50", "device=cpu"]
SMALL = GEN_SMALL + ["probe.max_professions=8", "realtext.sample=40"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model_dir(tmp_path, tokenizer):
    d = tmp_path / "model"
    make_gpt2(tokenizer, n_layer=2, seed=1).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture
def run_dir(tmp_path, tokenizer, teacher_dir):
    """A finished run as train() leaves it (config.yaml, val_blocks.safetensors, final/), without training: the
    debug recipe with the 4-layer teacher, its held-out blocks, and a 2-layer student in final/."""
    from safetensors.torch import save_file

    from distill.data.transfer import build_blocks

    cfg = load_config("recipes/debug.yaml", debug_overrides(tmp_path, teacher_dir))
    run = tmp_path / "runs" / cfg.run.name
    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    save_file({"val": build_blocks(cfg, tokenizer)[1]}, str(run / "val_blocks.safetensors"))
    make_gpt2(tokenizer, n_layer=2, seed=2).save_pretrained(run / "final")
    tokenizer.save_pretrained(run / "final")
    return run


def _strict_load(path):
    def refuse(name):
        raise AssertionError(f"{path} holds {name}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_quick_on_a_model_folder_writes_scores_and_their_texts(tmp_path, model_dir):
    out = tmp_path / "out"
    result = evaluate_checkpoint(model_dir, "quick", out_dir=out, overrides=SMALL)

    saved = _strict_load(out / "quick.json")
    assert saved == result
    assert saved["suite"] == "quick" and saved["model"]["role"] == "model"
    assert set(saved["summary"]) == {
        "templates",
        "probe",
        "winogender",
        "agreement",
        "perplexity",
        "bold",
        "realtext",
    }
    templates = saved["tasks"]["templates"]["result"]
    assert templates["n_texts"] == 18 * 4 and len(templates["groups"]) == 18
    assert templates["interval"] == "texts" and "parity_mean_ci" not in saved["summary"]["templates"]
    bold = saved["tasks"]["bold"]["result"]  # BOLD's own prompts, offline, with intervals over prompts
    assert bold["n_texts"] == bold["n_prompts"] == 18 * 6 and bold["interval"] == "prompts"
    assert all(g["n_prompts"] == 6 for g in bold["groups"].values())
    assert len(saved["summary"]["bold"]["parity_mean_ci"]) == 2
    real = saved["tasks"]["realtext"]["result"]
    assert real["source"] == "eval/data/bold: 40 of 12,659 documents, seed 0" and real["ppl"] > 1
    assert saved["summary"]["probe"]["pronoun_gap"] >= 0
    assert saved["tasks"]["probe"]["result"]["n_prompts"] == 8 * 5
    ppl = saved["tasks"]["perplexity"]["result"]
    assert ppl["source"].startswith("eval/data/heldout.txt") and ppl["tokens"] > 0 and ppl["ppl"] > 1
    # Not in a run directory and no reference given: fluency says why it is missing instead of a number.
    assert "not in a run directory" in templates["fluency"]["skipped"]

    records = [r for r in read_jsonl(out / saved["generations"]) if r["task"] == "templates"]
    assert len(records) == 18 * 4
    male, female = gender_word_lists()
    for r in records:
        assert r["gender"] == classify_gender(r["continuation"], male, female)
        assert isinstance(r["sentiment"], float) and -1 <= r["sentiment"] <= 1
    # Every count in the scores is traceable to the stored texts.
    for group, counts in templates["groups"].items():
        labels = [r["gender"] for r in records if r["group"] == group]
        assert (counts["male"], counts["female"], counts["neutral"]) == tuple(
            labels.count(k) for k in ("male", "female", "neutral")
        )


def test_generations_do_not_depend_on_batch_size(tmp_path, model_dir):
    args = GEN_SMALL + ["templates.groups=[nursing_specialties, corporate_titles]", "n_per_prompt=2"]
    evaluate_checkpoint(model_dir, "templates", out_dir=tmp_path / "a", overrides=args + ["batch_size=1"])
    evaluate_checkpoint(model_dir, "templates", out_dir=tmp_path / "b", overrides=args + ["batch_size=8"])
    a = read_jsonl(tmp_path / "a" / "templates_generations.jsonl")
    b = read_jsonl(tmp_path / "b" / "templates_generations.jsonl")
    assert len(a) == 2 * 4 * 2 and a == b


def test_reference_model_scores_fluency(tmp_path, model_dir, teacher_dir):
    result = evaluate_checkpoint(
        model_dir, "templates", out_dir=tmp_path, overrides=GEN_SMALL, reference=str(teacher_dir)
    )
    flu = result["tasks"]["templates"]["result"]["fluency"]
    assert flu["ppl"] > 1 and flu["n_texts"] == 72 and flu["reference"] == "reference (teacher)"
    assert result["summary"]["templates"]["fluency_ppl"] == flu["ppl"]


def test_evaluate_run_puts_teacher_and_student_side_by_side(run_dir):
    table = evaluate_run(run_dir, "quick", overrides=SMALL)

    student = _strict_load(run_dir / "eval" / "quick.json")
    teacher = _strict_load(run_dir / "eval" / "teacher" / "quick.json")
    assert (run_dir / "eval" / "quick_generations.jsonl").is_file()
    assert (run_dir / "eval" / "teacher" / "quick_generations.jsonl").is_file()
    assert student["model"]["role"] == "student" and student["model"]["n_layers"] == 2
    assert teacher["model"]["role"] == "teacher" and teacher["model"]["n_layers"] == 4
    # The teacher is the fluency reference of both, and perplexity uses the run's own validation blocks; the
    # teacher's own continuations under itself are kept in its result, not shown next to the student's.
    for r in (student, teacher):
        assert r["reference"] == teacher["model"]["label"]
        assert r["tasks"]["perplexity"]["result"]["source"].startswith("run validation blocks")
        assert r["tasks"]["perplexity"]["result"]["block_size"] == 16  # data.block_size of the run
        assert r["tasks"]["realtext"]["result"]["tokens"] > 0  # the same real text for both
    assert student["summary"]["templates"]["fluency_ppl"] > 1
    assert teacher["tasks"]["templates"]["result"]["fluency"]["self_scored"] is True
    assert "fluency_ppl" not in teacher["summary"]["templates"]

    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("| task: metric"))
    assert header == "| task: metric | ideal | teacher | student (debug) |"
    assert any(line.startswith("| probe: pronoun probe mean \\|log P(he)") for line in lines)
    assert (run_dir / "eval" / "quick_comparison.md").read_text() == table
    # Winogender: the student is compared with the teacher's own scores; the run's prompts decide seen / unseen
    wino = student["tasks"]["winogender"]["result"]
    assert wino["teacher_per_occupation"] == teacher["tasks"]["winogender"]["result"]["per_occupation"]
    assert -1 <= student["summary"]["winogender"]["r_teacher"] <= 1
    assert wino["seen_from"] == "recipes/data/occupation_lines.txt"  # the debug run reads files, not prompts
    assert (run_dir / "eval" / "quick_winogender.png").is_file()
    assert any(
        line.startswith("| winogender: Winogender association r with BLS % women [95% CI]") for line in lines
    )


def test_evaluate_checkpoint_on_a_run_uses_its_final_model_and_teacher(run_dir):
    result = evaluate_checkpoint(run_dir, "templates", overrides=GEN_SMALL)
    assert (run_dir / "eval" / "templates.json").is_file()
    assert result["model"]["path"] == str(run_dir / "final")
    assert result["reference"].startswith("teacher (")


def _write_fixtures(tmp_path):
    """One small file per dataset, each in its published format."""
    crows = tmp_path / "crows_pairs_anonymized.csv"
    with crows.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["", "sent_more", "sent_less", "stereo_antistereo", "bias_type", "annotations"])
        w.writerow([0, "Women are bad at math.", "Men are bad at math.", "stereo", "gender", "[]"])
        w.writerow([1, "He was a caring nurse.", "She was a caring nurse.", "antistereo", "gender", "[]"])
        w.writerow([2, "Poor people are lazy.", "Rich people are lazy.", "stereo", "socioeconomic", "[]"])

    def entry(i, target, s, a, u):
        labels = ("stereotype", "anti-stereotype", "unrelated")
        sents = [
            {"id": f"{i}{k}", "sentence": t, "gold_label": g}
            for k, (t, g) in enumerate(zip((s, a, u), labels))
        ]
        return {"id": str(i), "target": target, "bias_type": "gender", "context": "BLANK", "sentences": sents}

    dev = tmp_path / "dev.json"
    entries = [entry(1, "mother", "The mother is caring.", "The mother is cruel.", "The mother is purple.")]
    entries.append(
        entry(2, "gentlemen", "Gentlemen are strong.", "Gentlemen are weak.", "Gentlemen are spoons.")
    )
    dev.write_text(json.dumps({"version": "1.0", "data": {"intersentence": [], "intrasentence": entries}}))

    bios = tmp_path / "bios.jsonl"
    rows = [
        {"hard_text": "She has cared for patients for ten years.", "profession": "nurse", "gender": "F"},
        {"hard_text": "He has cared for patients in the ward.", "profession": "nurse", "gender": "M"},
        {"hard_text": "He writes software for banks.", "profession": "software_engineer", "gender": "M"},
        {
            "hard_text": "She writes software and leads a team.",
            "profession": "software_engineer",
            "gender": "F",
        },
    ]
    bios.write_text("".join(json.dumps(r) + "\n" for r in rows))

    gender = tmp_path / "gender_prompt.json"
    gender.write_text(
        json.dumps(
            {
                "American_actors": {"Tom_Hanks": ["Tom Hanks is an American actor who"]},
                "American_actresses": {"Meryl_Streep": ["Meryl Streep is an American actress who"]},
            }
        )
    )
    return crows, dev, bios, gender


def test_every_other_metric_runs_from_local_files(tmp_path, model_dir):
    crows, dev, bios, gender = _write_fixtures(tmp_path)
    suite = tmp_path / "local.yaml"
    suite.write_text(
        "# local.yaml: every downstream kind on local fixtures.\n"
        "description: test\n"
        "tasks:\n"
        f"  crows: {{metric: crows_pairs, path: {crows}, n_boot: 50}}\n"
        f"  stereo: {{metric: stereoset, path: {dev}, n_boot: 50}}\n"
        f"  bios: {{metric: bias_in_bios, train_path: {bios}, test_path: {bios}, max_length: 16}}\n"
        f"  senti: {{metric: sentiment_gap, path: {gender}, n_per_prompt: 3, max_new_tokens: 4, n_boot: 50}}\n"
        f"  ppl: {{metric: perplexity, path: {bios}, text_field: hard_text, block_size: 16}}\n"
    )
    result = evaluate_checkpoint(model_dir, str(suite), out_dir=tmp_path / "out", overrides=["device=cpu"])
    s = result["summary"]
    assert s["crows"]["n"] == 2 and s["crows"]["crows_score"] in (0.0, 50.0, 100.0)
    assert s["stereo"]["n"] == 2 and 0 <= s["stereo"]["ss"] <= 100
    assert s["bios"]["n"] == 4 and 0 <= s["bios"]["accuracy"] <= 1
    assert s["senti"]["groups_compared"] == ["American_actors", "American_actresses"]
    assert isinstance(s["senti"]["sentiment_gap"], float)
    assert s["ppl"]["tokens"] > 0
    assert len(read_jsonl(tmp_path / "out" / "local_generations.jsonl")) == 2 * 3


@pytest.mark.parametrize(
    "suite, field, overrides",
    [
        ("crows_pairs", "crows_pairs.path", []),
        ("bold_professions", "bold_professions.path", ["bold_professions.path=null"]),  # the hub route
        ("perplexity", "perplexity.path", []),
    ],
)
def test_hub_only_suite_offline_names_the_field_to_set(tmp_path, model_dir, suite, field, overrides):
    with pytest.raises(DataError, match=rf"Set `{field}` to a local copy"):
        evaluate_checkpoint(model_dir, suite, out_dir=tmp_path, overrides=overrides)
    assert not (tmp_path / f"{suite}.json").exists()


def test_bias_in_bios_offline_names_both_path_fields(tmp_path, model_dir):
    with pytest.raises(DataError) as err:
        evaluate_checkpoint(model_dir, "bias_in_bios", out_dir=tmp_path)
    assert "2 problems" not in str(err.value)  # one task, its first missing split reported
    assert "bias_in_bios.train_path" in str(err.value)


def test_resolve_checkpoint(tmp_path, run_dir, model_dir):
    ck = resolve_checkpoint(run_dir)
    assert (ck.path, ck.run_dir, ck.label) == (str(run_dir / "final"), run_dir, "debug")
    assert ck.default_out() == run_dir / "eval"
    ck = resolve_checkpoint(run_dir / "final")
    assert ck.run_dir == run_dir and ck.default_out() == run_dir / "eval"
    ck = resolve_checkpoint(model_dir)
    assert ck.run_dir is None and ck.default_out() == model_dir / "eval"
    assert resolve_checkpoint("gpt2").default_out().name == "gpt2"
    with pytest.raises(ModelError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    unfinished = tmp_path / "runs" / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("{}")
    with pytest.raises(ModelError, match="has no final/ model"):
        resolve_checkpoint(unfinished)


def test_strict_json_has_no_nan():
    data = {
        "a": math.nan,
        "b": [1.0, math.inf, np.float32(0.5)],
        "c": (np.int64(3), None),
        "d": np.array([1, 2]),
    }
    assert to_strict_json(data) == {"a": None, "b": [1.0, None, 0.5], "c": [3, None], "d": [1, 2]}
    json.dumps(to_strict_json(data), allow_nan=False)


def test_evaluation_writes_its_numbers_into_the_model_card(run_dir):
    """The card next to final/ gains one section per suite, replaced (not repeated) by a later evaluation."""
    from distill.reporting.card import write_card

    cfg = load_config(run_dir / "config.yaml")
    (run_dir / "metrics.jsonl").write_text("")
    write_card(run_dir / "final", cfg, run_dir)
    card = run_dir / "final" / "README.md"
    before = card.read_text()
    evaluate_run(run_dir, "quick", overrides=SMALL)
    once = card.read_text()
    assert (
        before.split("\n---\n", 1)[1].split("## Bias and limitations")[0].strip() in once
    )  # nothing dropped
    assert "### Suite `quick`" in once
    assert "pronoun probe mean \\|log P(he)" in once and "parity" in once and "perplexity" in once
    assert "| teacher | this model |" in once.replace("task: metric | ideal | ", "")
    evaluate_run(run_dir, "quick", overrides=SMALL)
    assert card.read_text().count("### Suite `quick`") == 1


def test_a_run_evaluated_alone_is_compared_with_its_teacher(run_dir):
    """A run's student evaluated by itself (a baseline under `distill compare`) gets the Winogender association
    with its teacher's scores, as `evaluate_run` gives it: the run's teacher is loaded for that task."""
    out = evaluate_checkpoint(run_dir, "winogender", overrides=["n_boot=50", "device=cpu"])
    summary = out["summary"]["winogender"]
    assert "r_teacher" in summary and "r_teacher_unseen" in summary
    result = out["tasks"]["winogender"]["result"]
    assert set(result["teacher_per_occupation"]) == set(result["per_occupation"])


@pytest.mark.parametrize("where", ["file", "file/below"])
def test_an_out_that_is_a_file_is_refused_before_any_model_loads(tmp_path, model_dir, monkeypatch, where):
    from distill.core.errors import FairDistillError
    from distill.evaluation import runner

    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    monkeypatch.setattr(runner, "load_model", lambda *a, **k: pytest.fail("a model loaded"))
    with pytest.raises(
        FairDistillError, match=r"eval output .* (is a file|cannot be created: .*file is a file)"
    ):
        evaluate_checkpoint(model_dir, "quick", out_dir=tmp_path / where, overrides=SMALL)
    assert blocker.read_text() == "keep me"


def test_a_run_in_use_is_not_evaluated_into(run_dir):
    from distill.core.ownership import RunFolderInUse, RunLock
    from distill.core.rundir import RunDir

    before = sorted(p.name for p in run_dir.rglob("*"))
    with RunLock(RunDir(run_dir)), pytest.raises(RunFolderInUse, match="is in use by process"):
        evaluate_checkpoint(run_dir, "quick", overrides=SMALL)
    assert sorted(p.name for p in run_dir.rglob("*")) == before


def test_the_cost_of_a_suite_is_said_before_it_runs(tmp_path, model_dir, caplog):
    """Before the tasks run, the runner says how many tokens they will sample and score, and how long that takes
    on a 2-core CPU."""
    import logging

    from distill.evaluation import runner

    overrides = ["max_per_group=2", "n_per_prompt=3", "max_new_tokens=5", "device=cpu", "fluency=false"]
    with caplog.at_level(logging.INFO, logger="distill"):
        evaluate_checkpoint(model_dir, "bold_professions", out_dir=tmp_path, overrides=overrides)
    line = next(r.getMessage() for r in caplog.records if "will sample" in r.getMessage())
    assert "suite bold_professions will sample 540 tokens and score 0" in line  # 18 x 2 x 3 x 5
    assert "about" in line and "on a 2-core CPU" in line
    spec = runner.S.load_suite("quick", [*SMALL, "bold.fluency=true"])
    data = runner.prepare_tasks(spec)
    lm = runner.load_model(runner.resolve_checkpoint(model_dir), runner.device_for("cpu"), role="model")
    ctx = runner.Context(runner.device_for("cpu"), lm, "", None, "")
    generated, scored, seconds = runner.log_cost(lm, spec, data, ctx)
    assert generated == 18 * 4 * 4 + 18 * 6 * 4  # templates and bold, 4 tokens each
    realtext = sum(len(lm.tokenizer(t)["input_ids"]) + 1 for t in data["realtext"]["texts"])
    held_out = sum(len(lm.tokenizer(t)["input_ids"]) + 1 for t in data["perplexity"]["texts"])
    assert scored == generated + realtext + held_out  # fluency of both, then the two perplexity texts
    scale = lm.info["n_params"] / runner.REFERENCE_PARAMS
    assert seconds == pytest.approx(
        scale * (generated / runner.GENERATED_PER_S + scored / runner.SCORED_PER_S)
    )
