"""The model card as the Hub and a reader see it: its YAML front matter parses into the Hub's metadata fields, every
Markdown table renders (markdown-it, not a regex) with every number in its cell, no local path leaks, evaluations
merge in without dropping the teacher column, and the usage snippet runs."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import debug_overrides, make_gpt2
from markdown_it import MarkdownIt

from distill.core.recipe import load_config, save_config
from distill.reporting.card import read_front_matter, teacher_hub, write_card
from distill.reporting.card_evaluation import merge_evaluation

NUMBER = re.compile(r"^-?\d[\d,]*(\.\d+)?(e[+-]?\d+)?( \[-?\d[\d.e+-]*, -?\d[\d.e+-]*\])?$")
SMALL = ["n_per_prompt=1", "max_new_tokens=4", "n_boot=50", "device=cpu", "probe.max_professions=8"]

pytestmark = pytest.mark.usefixtures("one_thread")


def rendered_tables(markdown: str) -> list[list[list[str]]]:
    """Every table of `markdown` as CommonMark + GFM tables render it: rows of cell texts, header first."""
    tables, rows, row, cell = [], None, None, None
    for tok in MarkdownIt("commonmark").enable("table").parse(markdown):
        if tok.type == "table_open":
            rows = []
        elif tok.type == "table_close":
            tables.append(rows)
        elif tok.type == "tr_open":
            row = []
        elif tok.type == "tr_close":
            rows.append(row)
        elif tok.type in ("th_open", "td_open"):
            cell = ""
        elif tok.type == "inline" and cell is not None:
            cell = "".join(c.content for c in tok.children or [])
        elif tok.type in ("th_close", "td_close"):
            row.append(cell)
            cell = None
    return tables


def assert_tables_whole(body: str) -> list[list[list[str]]]:
    tables = rendered_tables(body)
    assert tables, "the card has no table"
    for t in tables:
        width = len(t[0])
        assert all(len(r) == width for r in t), t  # a stray pipe would split a cell and push a number out
    return tables


def check_hub_metadata(meta: dict) -> None:
    """The fields of the Hub's model-card metadata spec that fairdistill fills, with their types."""
    assert meta["language"] == ["en"] and meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-generation"
    assert "fairdistill" in meta["tags"] and all(isinstance(t, str) for t in meta["tags"])
    index = meta["model-index"]
    assert isinstance(index, list) and isinstance(index[0]["name"], str)
    for result in index[0]["results"]:
        assert result["task"]["type"] == "text-generation"
        assert result["dataset"]["type"] and result["dataset"]["name"]
        for m in result["metrics"]:
            assert isinstance(m["type"], str) and isinstance(m["value"], float) and m["name"]


def _metrics(run, steps=4):
    recs = [
        {
            "step": 0,
            "val/loss": 6.0,
            "val/teacher_loss": 3.5,
            "probe/pronoun_gap": 0.7,
            "probe/he_minus_she": -0.2,
            "probe/teacher_pronoun_gap": 0.757,
            "probe/teacher_he_minus_she": -0.264,
        },
        {
            "step": steps,
            "val/loss": 5.3,
            "val/ppl": 200.3,
            "probe/pronoun_gap": 0.545,
            "probe/he_minus_she": -0.35,
            "train/tokens": 2048,
        },
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_teachers_are_named_by_their_hub_id_and_license():
    assert teacher_hub("embedded:smollm2-135m") == (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "apache-2.0",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    )
    assert teacher_hub("gpt2")[:2] == ("openai-community/gpt2", "mit")
    assert teacher_hub("/nowhere/my-teacher")[0] is None


def test_the_default_recipes_card_is_hub_metadata_and_renders_every_number(tmp_path):
    cfg = load_config("recipes/smollm2-135m_to_6L.yaml", [f"run.output_dir={tmp_path}"])
    run = tmp_path / cfg.run.name
    (run / "final").mkdir(parents=True)
    _metrics(run, steps=100)
    path = write_card(run / "final", cfg, run, precision="no")
    text = path.read_text()
    meta, body = read_front_matter(path)
    check_hub_metadata(meta)
    assert meta["license"] == "apache-2.0"  # SmolLM2's, inherited by the weights derived from it
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    entry = meta["model-index"][0]["results"][0]
    assert {m["type"]: m["value"] for m in entry["metrics"]} == {
        "perplexity": round(2.718281828459045**5.3, 4),
        "pronoun_gap": 0.545,
    }
    assert str(tmp_path) not in text and ".cache" not in text and "embedded:" not in text
    for section in ("## How it was made", "## Evaluation", "## Bias and limitations", "## How to use"):
        assert section in body
    tables = assert_tables_whole(body)
    training = next(t for t in tables if t[0][0] == "metric")
    assert training[0] == ["metric", "teacher", "student at step 0", "student at step 100"]
    gap = next(r for r in training if r[0].startswith("pronoun probe mean |gap|"))
    assert gap == ["pronoun probe mean |gap| (nats; 24 professions x 5 templates)", "0.757", "0.7", "0.545"]
    assert all(NUMBER.match(c) for r in training[1:] for c in r[1:]), training
    made = dict(r for r in next(t for t in tables if t[0] == ["setting", "value"])[1:])
    assert (
        made["method"].startswith("CDA + mean")
        and "100 optimizer steps; 2,048 training tokens" in made["steps, tokens"]
    )
    # perplexity relative to the teacher, in plain words, from the card's own numbers (exp(5.3) / exp(3.5))
    assert "its perplexity is 200.3 against the teacher's 33.1 (6.05 times the teacher's)" in body
    assert "text its teacher wrote" in body and "fluent" not in body  # no claim the numbers do not make


def test_the_card_says_which_teacher_layers_a_pruned_student_copies(tmp_path):
    cfg = load_config("recipes/smollm2-135m_to_24L.yaml", [f"run.output_dir={tmp_path}"])
    run = tmp_path / cfg.run.name
    (run / "final").mkdir(parents=True)
    _metrics(run, steps=60)

    def student_row() -> str:
        _, body = read_front_matter(write_card(run / "final", cfg, run, precision="bf16"))
        made = dict(r for r in next(t for t in assert_tables_whole(body) if t[0] == ["setting", "value"])[1:])
        return made["student"]

    # before prune.json exists (a card written by hand for a run folder without it): what the recipe asks for
    row = student_row()
    assert "6 layers of lowest block_influence dropped" in row and "None" not in row
    kept = [i for i in range(30) if i not in (13, 14, 15, 17, 25, 26)]
    (run / "prune.json").write_text(
        json.dumps({"by": "block_influence", "layers": kept, "dropped": [13, 14, 15, 17, 25, 26]})
    )
    row = student_row()
    assert row.startswith(
        "the teacher with its 6 layers of lowest block_influence dropped ([13, 14, 15, 17, 25, 26])"
    )
    assert "the other 24 copied (embeddings, final norm and head too)" in row


@pytest.fixture
def run_dir(tmp_path, tokenizer, teacher_dir):
    """A finished debug run (config, held-out blocks, metrics, final/ with its card) on the tiny teacher."""
    from safetensors.torch import save_file

    from distill.data.transfer import build_blocks

    cfg = load_config("recipes/debug.yaml", debug_overrides(tmp_path, teacher_dir, "tracking.wandb=false"))
    run = tmp_path / "runs" / cfg.run.name
    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    save_file({"val": build_blocks(cfg, tokenizer)[1]}, str(run / "val_blocks.safetensors"))
    model = make_gpt2(tokenizer, n_layer=2, seed=2)
    model.save_pretrained(run / "final")
    tokenizer.save_pretrained(run / "final")
    _metrics(run)
    write_card(run / "final", cfg, run, model=model, precision="no")
    return run


def test_evaluations_merge_into_the_card_and_keep_the_teacher(run_dir, monkeypatch):
    from distill.reporting.evaluate import evaluate_checkpoint, evaluate_run

    card = run_dir / "final" / "README.md"
    before_meta, before = read_front_matter(card)
    assert (
        "base_model" not in before_meta
    )  # a local teacher folder has no Hub id, and its path is not written
    evaluate_run(run_dir, "quick", overrides=SMALL)
    meta, body = read_front_matter(card)
    check_hub_metadata(meta)
    assert before.split("## Bias and limitations")[0].strip() in body  # nothing already there is dropped
    assert "## Bias and limitations" in body and "## How to use" in body
    suites = [r["dataset"]["type"] for r in meta["model-index"][0]["results"]]
    assert suites == ["fairdistill/training-validation", "fairdistill/quick"]
    quick = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][1]["metrics"]}
    student = json.loads((run_dir / "eval" / "quick.json").read_text())
    assert quick["probe/pronoun_gap"] == round(student["summary"]["probe"]["pronoun_gap"], 4)

    def suite_table():
        tables = assert_tables_whole(read_front_matter(card)[1])
        return next(t for t in tables if t[0][:2] == ["task: metric", "ideal"])

    table = suite_table()
    assert table[0] == ["task: metric", "ideal", "teacher", "this model"]
    probe = next(r for r in table if r[0].startswith("probe: pronoun probe mean |log P(he) - log P(she)|"))
    assert all(NUMBER.match(c) for c in probe[2:]), probe  # both numbers, each with its interval
    assert "[" in probe[3]
    assert "prompts (8 professions x 5 templates)" in read_front_matter(card)[1]

    # the student alone evaluated again: the section is replaced, the teacher column stays
    evaluate_checkpoint(run_dir, "quick", overrides=SMALL)
    text = card.read_text()
    assert text.count("### Suite `quick`") == 1 and suite_table()[0][2:] == ["teacher", "this model"]
    assert len(read_front_matter(card)[0]["model-index"][0]["results"]) == 2
    assert str(run_dir.parent.parent) not in text

    # the three-line snippet runs as written, from the folder the run was started in
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(run_dir.parent)
    exec(snippet.replace("max_new_tokens=20", "max_new_tokens=2"), {})


def test_a_card_fairdistill_did_not_write_is_left_alone(tmp_path):
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: mit\n---\n# someone else's model\n")
    assert not merge_evaluation(tmp_path, "quick", {"summary": {}})
    assert card.read_text() == "---\nlicense: mit\n---\n# someone else's model\n"


def test_front_matter_round_trips(tmp_path):
    card = tmp_path / "README.md"
    card.write_text("---\n" + yaml.safe_dump({"tags": ["fairdistill"], "model-index": []}) + "---\nbody\n")
    assert read_front_matter(card) == ({"tags": ["fairdistill"], "model-index": []}, "body\n")


def test_compare_puts_the_teacher_and_both_students_in_each_card(tmp_path):
    """After `distill compare`, the default's card and its baseline's show the teacher, the other method and
    their own student on the suite's numbers, with the real-text perplexity against the teacher's."""
    from distill.core.recipe import config_to_yaml
    from distill.evaluation import results as R
    from distill.reporting.evaluate import cards_side_by_side

    def payload(label, role, ppl, share):
        summary = {
            "bold": {
                "female_share": share,
                "female_share_ci": [share - 0.1, share + 0.1],
                "parity_mean": 0.5,
            },
            "realtext": {"ppl": ppl, "tokens": 3000},
        }
        result = {"ppl": ppl, "tokens": 3000, "source": "eval/data/bold: 100 of 12,659 documents, seed 0"}
        return {
            "suite": "quick",
            "model": {"label": label, "role": role, "checkpoint": label},
            "summary": summary,
            "tasks": {
                "bold": {"metric": "generation_disparity", "result": summary["bold"]},
                "realtext": {"metric": "perplexity", "result": result},
            },
        }

    runs = []
    for recipe, ppl, share in (
        ("smollm2-135m_to_24L", 44.0, 0.45),
        ("smollm2-135m_to_24L_baseline", 43.0, 0.3),
    ):
        cfg = load_config(f"recipes/{recipe}.yaml", [f"run.output_dir={tmp_path}"])
        run = tmp_path / cfg.run.name
        (run / "final").mkdir(parents=True)
        R.run_config_file(run).write_text(config_to_yaml(cfg))
        _metrics(run, steps=60)
        write_card(run / "final", cfg, run, precision="bf16")
        (run / "eval" / "teacher").mkdir(parents=True)
        (run / "eval" / "quick.json").write_text(json.dumps(payload(recipe, "student", ppl, share)))
        (run / "eval" / "teacher" / "quick.json").write_text(
            json.dumps(payload("teacher", "teacher", 40.0, 0.25))
        )
        runs.append(run)
    cards_side_by_side(runs, "quick")
    _, body = read_front_matter(runs[0] / "final" / "README.md")
    table = next(t for t in assert_tables_whole(body) if t[0][0] == "task: metric")
    assert table[0] == ["task: metric", "ideal", "teacher", "plain KD", "this model"]
    assert ["realtext: perplexity", "lower", "40", "43", "44"] in table
    assert (
        "`realtext`: perplexity 44 against the teacher's 40, 1.10 times the teacher's, on the same text"
        in body
    )
    _, base = read_front_matter(runs[1] / "final" / "README.md")
    assert (
        next(t for t in assert_tables_whole(base) if t[0][0] == "task: metric")[0][3]
        == "CDA + mean + log-ratio x0.25 + names: names_census"
    )


def test_the_card_states_the_log_ratio_term_and_the_erasure_in_its_loss(tmp_path):
    from distill.reporting.card import _made_rows

    cfg = load_config(
        "recipes/smollm2-135m_to_24L.yaml", [f"run.output_dir={tmp_path}", "student.erase.rank=2"]
    )
    loss = dict((r[0], r[1]) for r in _made_rows(cfg, {}, None, None, "t", tmp_path))["loss"]
    assert "0.25 x the log-ratio term" in loss and "min(1, pair mass / 0.02)" in loss
    assert "erased in closed form (rank 2" in loss
    plain = load_config("recipes/smollm2-135m_to_24L_baseline.yaml", [f"run.output_dir={tmp_path}"])
    loss = dict((r[0], r[1]) for r in _made_rows(plain, {}, None, None, "t", tmp_path))["loss"]
    assert "log-ratio" not in loss and "erased" not in loss
