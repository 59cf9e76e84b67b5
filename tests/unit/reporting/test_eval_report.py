"""The report from two hand-written run directories: the teacher once then each student, intervals and undefined
values in the tables, the three plots written as PNGs, and clear errors for runs without results."""

from __future__ import annotations

import json

import pytest

from distill.core.errors import DataError
from distill.reporting.columns import collect_columns
from distill.reporting.report import write_report
from distill.reporting.tables import fmt, suite_table

GROUPS = ["nursing_specialties", "engineering_branches", "dance_occupations"]
PROFESSIONS = ["nurse", "engineer", "pilot"]


def _payload(label, role, checkpoint, parity, gaps, ppl, female_share=0.3, method=None):
    """A `quick.json` as the runner writes it, cut down to what the report reads."""
    groups = {g: {"n": 12, "male": 6, "female": 2, "neutral": 4, "parity": p} for g, p in zip(GROUPS, parity)}
    defined = [p for p in parity if p is not None]
    summary = {
        "templates": {
            "parity_mean": sum(defined) / len(defined),
            "parity_min": min(defined),
            "female_share": female_share,
            "female_share_ci": [female_share - 0.1, female_share + 0.1],
            "n_gendered": 24,
            "n_texts": 36,
            "n_groups_undefined": parity.count(None),
            "fluency_ppl": ppl * 0.5,
        },
        "probe": {
            "pronoun_gap": sum(abs(g) for g in gaps) / 3,
            "pronoun_gap_ci": [sum(abs(g) for g in gaps) / 3 - 0.05, sum(abs(g) for g in gaps) / 3 + 0.1],
            "he_minus_she": sum(gaps) / 3,
            "n_prompts": 3,
        },
        "perplexity": {"ppl": ppl, "tokens": 2048},
    }
    return {
        "suite": "quick",
        "description": "hand-written results",
        "model": {
            "label": label,
            "role": role,
            "checkpoint": checkpoint,
            "n_params": 1_000_000,
            "n_layers": 2,
            **({"method": method} if method else {}),
        },
        "summary": summary,
        "tasks": {
            "templates": {
                "metric": "generation_disparity",
                "result": {"groups": groups, **summary["templates"]},
            },
            "probe": {
                "metric": "pronoun_probe",
                "result": {
                    "per_profession": dict(zip(PROFESSIONS, gaps)),
                    "per_template": {"The {profession} said that": 0.1},
                    **summary["probe"],
                },
            },
            "perplexity": {
                "metric": "perplexity",
                "result": {
                    "ppl": ppl,
                    "source": "run validation blocks (16 x 128 tokens)",
                    "block_size": 128,
                },
            },
        },
    }


def _write_run(root, name, student):
    teacher = _payload(
        "teacher (embedded:smollm2-135m)",
        "teacher",
        "embedded:smollm2-135m",
        [0.2, None, 0.5],
        [-1.5, 1.2, 0.8],
        30.0,
    )
    run = root / name
    (run / "eval" / "teacher").mkdir(parents=True)
    (run / "eval" / "teacher" / "quick.json").write_text(json.dumps(teacher))
    (run / "eval" / "quick.json").write_text(json.dumps(student))
    (run / "eval" / "notes.json").write_text("{}")  # other JSON in the folder is ignored
    return run


@pytest.fixture
def runs(tmp_path):
    a = _write_run(
        tmp_path,
        "baseline",
        _payload(
            "baseline", "student", "runs/baseline", [0.1, 0.0, 0.4], [-2.0, 1.5, 1.0], 45.0, method="plain KD"
        ),
    )
    b = _write_run(
        tmp_path,
        "mitigated",
        _payload(
            "mitigated",
            "student",
            "runs/mitigated",
            [0.8, 0.9, None],
            [-0.2, 0.1, 0.05],
            48.0,
            0.45,
            method="CDA + mean",
        ),
    )
    return [a, b]


def test_columns_are_the_teacher_once_then_each_student(runs):
    columns = collect_columns(runs)
    assert [(c.label, c.role, c.name) for c in columns] == [
        ("teacher", "teacher", "embedded:smollm2-135m"),
        ("plain KD", "student", "baseline"),
        ("CDA + mean", "student", "mitigated"),
    ]


def test_two_runs_of_one_method_are_told_apart_by_folder(tmp_path):
    a = _write_run(
        tmp_path, "s0", _payload("s0", "student", "runs/s0", [0.5] * 3, [1, 1, 1], 40.0, method="CDA")
    )
    b = _write_run(
        tmp_path, "s1", _payload("s1", "student", "runs/s1", [0.5] * 3, [1, 1, 1], 41.0, method="CDA")
    )
    assert [c.label for c in collect_columns([a, b])] == ["teacher", "CDA (s0)", "CDA (s1)"]


def test_report_tables_and_plots(tmp_path, runs):
    path = write_report([str(r) for r in runs], out=tmp_path / "report", log_wandb=False)
    assert path == tmp_path / "report" / "report.md"
    text = path.read_text()
    header = "| task: metric | ideal | teacher | plain KD | CDA + mean |"
    assert text.count(header) == 1
    assert (
        "| templates: female share of gendered texts [95% CI] | 0.5 | 0.3 [0.2, 0.4] | 0.3 [0.2, 0.4] | 0.45 [0.35, 0.55] |"
        in text
    )
    assert "| templates: groups with no gendered text (parity n/a) | 0 | 1 | 0 | 1 |" in text
    assert "| perplexity: perplexity | lower | 30 | 45 | 48 |" in text
    assert "| templates: gendered / all continuations |  | 24 / 36 | 24 / 36 | 24 / 36 |" in text
    # each group's counts under the suite's table (a result without prompt intervals shows none)
    assert "`templates` per group: male / female / neutral continuations of n" in text
    assert "| engineering_branches | 6 / 2 / 4 of 12: 0.25, n/a | 6 / 2 / 4 of 12: 0.25, 0.00 |" in text
    assert "| probe: pronoun probe mean \\|log P(he) - log P(she)\\| (nats) | 0 | 1.17 [1.12, 1.27] |" in text
    stems = ["female_share", "gap_vs_perplexity", "professions", "pronoun_gap"]
    out = tmp_path / "report"
    assert sorted(p.stem for p in out.glob("*.png") if not p.stem.endswith("_wide")) == stems
    for stem in stems:
        assert f"]({stem}.png)" in text
        for suffix, width in (("", 3.4), ("_wide", 7.0)):
            png, pdf = out / f"{stem}{suffix}.png", out / f"{stem}{suffix}.pdf"
            data = png.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
            assert int.from_bytes(data[16:20], "big") == round(width * 300)  # the IHDR width at 300 dpi
            assert pdf.read_bytes()[:5] == b"%PDF-"


def test_report_goes_next_to_the_runs_by_default(runs):
    path = write_report([str(r) for r in runs], log_wandb=False)
    assert path == runs[0].parent / "report" / "report.md"


def test_suite_table_for_teacher_vs_student():
    teacher = _payload("t", "teacher", "gpt2", [0.5, 0.5, 0.5], [1.0, 1.0, 1.0], 20.0)
    student = _payload("s", "student", "runs/s", [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], 25.0)
    student["summary"]["templates"]["female_share"] = None  # undefined: strict JSON null
    table = suite_table([("teacher", teacher), ("student", student), ("not run", None)])
    lines = table.splitlines()
    assert lines[0] == "| task: metric | ideal | teacher | student | not run |"
    assert "| templates: parity min(F/M, M/F), mean over groups | 1 | 0.5 | 1 | - |" in lines
    assert "| templates: female share of gendered texts [95% CI] | 0.5 | 0.3 [0.2, 0.4] | n/a | - |" in lines
    assert "| probe: pronoun probe mean log P(he) - log P(she) (nats) | 0 | 1 | 0 | - |" in lines


def test_number_format():
    assert [fmt(0.123456), fmt(123.456), fmt(None), fmt(float("nan")), fmt(7)] == [
        "0.123",
        "123.5",
        "n/a",
        "n/a",
        "7",
    ]


def test_runs_without_results_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no evaluation results"):
        write_report([str(tmp_path / "empty")], out=tmp_path / "r", log_wandb=False)
    with pytest.raises(DataError, match="not a directory"):
        write_report([str(tmp_path / "missing")], out=tmp_path / "r", log_wandb=False)
    with pytest.raises(DataError, match="no runs given"):
        write_report([], out=tmp_path / "r", log_wandb=False)


def test_the_report_run_is_named_and_tagged_after_its_inputs(tmp_path, runs, monkeypatch):
    import time

    monkeypatch.setenv("WANDB_MODE", "offline")
    write_report([str(r) for r in runs], out=tmp_path / "report", log_wandb=True)
    (folder,) = (tmp_path / "report" / "wandb").glob("offline-run-*")
    (records,) = folder.glob("run-*.wandb")
    want = (b"report: plain KD vs CDA + mean", b"baseline", b"mitigated", b"report/pronoun_gap")
    deadline = time.monotonic() + 30  # W&B's writer flushes a finished run shortly after `finish()`
    while not all(w in records.read_bytes() for w in want) and time.monotonic() < deadline:
        time.sleep(0.2)
    data = records.read_bytes()
    for w in want:
        assert w in data, w
