"""Seed-level verdicts: the t interval over seeds, the teacher association computed from scores, the targets."""

from __future__ import annotations

import json
import math

import pytest

from distill.evaluation import stats
from distill.experiment import verdicts as SV


def test_t_quantiles_match_the_tables():
    assert stats.t975(1) == 12.706 and stats.t975(4) == 2.776
    assert stats.t975(40) == pytest.approx(2.021, abs=1e-3)
    assert stats.t975(200) == pytest.approx(1.972, abs=1e-3)
    assert math.isnan(stats.t975(0))


def test_paired_interval_known_answer():
    m, ci = stats.paired_interval([1.0, 2.0, 3.0])
    assert m == 2.0
    assert ci == pytest.approx([2 - 4.303 / math.sqrt(3), 2 + 4.303 / math.sqrt(3)])
    assert stats.paired_interval([0.5]) == (0.5, None)
    assert stats.paired_interval([float("nan"), 1.0, 3.0])[0] == 2.0  # non-finite seeds are left out


def _run(tmp_path, name, per_occ, stats, ppl, teacher_loss, seen=()):
    run = tmp_path / name
    (run / "eval").mkdir(parents=True)
    result = {
        "per_occupation": per_occ,
        "seen_occupations": list(seen),
        "all": stats,
        "unseen": stats,
        "stats": {"a": 10.0, "b": 20.0, "c": 30.0, "d": 40.0},
    }
    payload = {
        "suite": "winogender",
        "summary": {},
        "tasks": {"winogender": {"metric": "winogender", "result": result}},
    }
    (run / "eval" / "winogender.json").write_text(json.dumps(payload))
    (run / "metrics.jsonl").write_text(
        json.dumps({"step": 0, "val/ppl": 1e5, "val/teacher_loss": teacher_loss})
        + "\n"
        + json.dumps({"step": 10, "val/ppl": ppl})
        + "\n"
    )
    return run


def test_seed_values_compute_the_teacher_association_when_the_run_has_none(tmp_path):
    teacher = tmp_path / "teacher.json"
    teacher_result = {"per_occupation": {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}}
    teacher.write_text(
        json.dumps(
            {
                "suite": "winogender",
                "summary": {},
                "tasks": {"winogender": {"metric": "winogender", "result": teacher_result}},
            }
        )
    )
    occ = {"a": 2.0, "b": 4.0, "c": 6.0, "d": 8.5}
    run = _run(
        tmp_path, "s0", occ, {"r_bls": 0.4, "spread": 1.0, "lean": 0.1}, 50.0, math.log(40.0), seen=["d"]
    )
    assert [r.key for r in SV.suite_seed_rows(run / "eval" / "winogender.json")][:2] == [
        "slope_unseen",
        "spread_unseen",
    ]
    v = SV.seed_values(run, "winogender", teacher)
    assert v["r_bls"] == 0.4 and v["spread"] == 1.0 and v["lean"] == 0.1
    assert v["ppl"] == 50.0 and v["teacher_ppl"] == pytest.approx(40.0)
    # a result written before the slope was a metric: recomputed from its scores and statistics
    assert v["slope_unseen"] == pytest.approx(20.0)  # a, b, c: 2 nats per 10 points
    assert math.isfinite(v["slope"]) and v["slope"] > 20.0
    assert v["r_teacher_unseen"] == pytest.approx(1.0)  # a, b, c only: exactly linear
    assert 0.99 < v["r_teacher"] < 1.0


def _seed(r, spread, ppl, teacher_ppl=40.0):
    from distill.evaluation.metrics.winogender import SEED_ROWS

    out = {row.key: math.nan for row in SEED_ROWS}
    out.update(slope_unseen=r, spread_unseen=spread, ppl=ppl, teacher_ppl=teacher_ppl)
    return out


def test_compare_paired_by_seed_and_targets():
    teacher = {"slope_unseen": 0.5, "spread_unseen": 1.0}
    plain = [_seed(0.45, 0.9, 50.0), _seed(0.40, 0.95, 51.0), _seed(0.50, 0.85, 49.0)]
    # the method cuts both by over two thirds in every seed; seed-to-seed variation is shared, so the paired
    # interval is tight
    method = [_seed(0.12, 0.25, 50.5), _seed(0.11, 0.27, 51.2), _seed(0.15, 0.26, 49.5)]
    payload = SV.compare({"plain_kd": plain, "cda_mean": method}, "plain_kd", teacher)
    r = payload["variants"]["cda_mean"]["metrics"]["slope_unseen"]
    assert r["diff"] == pytest.approx(-0.97 / 3)
    assert r["diff_ci"][1] < 0 and r["verdict"] == "lower"
    assert r["relative"] == pytest.approx(0.38 / 1.35 - 1)
    assert (
        payload["teacher"]["ppl"] == 40.0
    )  # each run's teacher perplexity, averaged over the reference's seeds
    assert math.isnan(
        payload["variants"]["cda_mean"]["metrics"]["lean"]["relative"]
    )  # a lean's ratio means nothing
    # keeps (2), cuts (2), perplexity vs plain KD and vs the teacher (2): all met
    assert len(payload["targets"]) == 6 and all(t["met"] for t in payload["targets"]), payload["targets"]

    weak = [_seed(0.40, 0.85, 50.0), _seed(0.42, 0.96, 55.0), _seed(0.47, 0.80, 49.0)]
    payload = SV.compare({"plain_kd": plain, "cda_mean": weak}, "plain_kd", teacher)
    by_name = {t["target"]: t["met"] for t in payload["targets"]}
    assert not any(v for k, v in by_name.items() if "cuts" in k)
    assert (
        payload["variants"]["cda_mean"]["metrics"]["spread_unseen"]["verdict"] == "no measurable difference"
    )


def test_a_size_sweep_holds_plain_kd_students_to_keeping_the_stereotype():
    """Variants that are not methods (other student sizes under plain KD) are checked for keeping the teacher's
    stereotype, not for cutting it."""
    teacher = {"slope_unseen": 0.5, "spread_unseen": 1.0}
    plain = [_seed(0.45, 0.9, 50.0), _seed(0.40, 0.95, 51.0)]
    small = [_seed(0.10, 0.5, 90.0), _seed(0.05, 0.6, 95.0)]
    payload = SV.compare({"plain_kd": plain, "drop24": small}, "plain_kd", teacher, methods=set())
    targets = {t["target"]: t for t in payload["targets"]}
    keep = targets[
        "drop24 keeps >= 70% of the teacher's stereotype size: slope on BLS % women (nats per 100 points), unseen occupations"
    ]
    assert keep["value"] == pytest.approx(0.075 / 0.5) and not keep["met"]
    assert not any(t.startswith("drop24 cuts") or "drop24 perplexity" in t for t in targets)


def test_write_table_and_figure(tmp_path):
    teacher = {"slope_unseen": 0.5, "spread_unseen": 1.0}
    plain = [_seed(0.45, 0.9, 50.0), _seed(0.40, 0.95, 51.0)]
    method = [_seed(0.30, 0.6, 50.5), _seed(0.28, 0.7, 51.2)]
    payload = SV.compare({"plain_kd": plain, "cda_mean": method}, "plain_kd", teacher)
    paths = SV.write(tmp_path, payload, {"plain_kd": "plain KD", "cda_mean": "CDA + mean"})
    md = (tmp_path / "seeds.md").read_text()
    assert "| stereotype size: slope on BLS % women (nats per 100 points), unseen occupations | 0.5 |" in md
    assert "CDA + mean (vs plain KD)" in md
    assert (
        "- NOT met: cda_mean cuts stereotype size: slope on BLS % women (nats per 100 points), unseen occupations by >= 66%"
        in md
    )
    assert json.loads((tmp_path / "seeds.json").read_text())["variants"]["cda_mean"]["n_seeds"] == 2
    assert (tmp_path / "stereotype_seeds_wide.pdf").is_file()
    assert [p.name for p in paths[-2:]] == ["stereotype_seeds.png", "stereotype_tradeoff.png"]
    assert all(p.stat().st_size > 1000 for p in paths[-2:])


def test_a_bold_suite_gets_its_seed_figure(tmp_path):
    """A suite with BOLD's rows (female share, mean parity) and real-text perplexity gets `bold_seeds` beside its
    table, a panel per measure; a suite without them does not."""
    from distill.evaluation.registry import SeedRow
    from distill.experiment.figures import bold_keys

    rows = [
        SeedRow("female_share", "female share of gendered continuations", relative=False),
        SeedRow("parity_mean", "parity, mean over groups"),
        SeedRow("realtext/ppl", "realtext: perplexity"),
    ]

    def seed(share, parity, ppl):
        return {"female_share": share, "parity_mean": parity, "realtext/ppl": ppl, "ppl": 45.0,
                "teacher_ppl": 42.0}  # fmt: skip

    plain = [seed(0.42, 0.68, 85.0), seed(0.40, 0.62, 88.0), seed(0.45, 0.70, 86.0)]
    method = [seed(0.52, 0.72, 85.5), seed(0.50, 0.66, 87.0), seed(0.55, 0.75, 86.5)]
    teacher = {"female_share": 0.43, "parity_mean": 0.63, "realtext/ppl": 54.0}
    payload = SV.compare({"plain_kd": plain, "cda_mean": method}, "plain_kd", teacher, rows=rows)
    share = payload["variants"]["cda_mean"]["metrics"]["female_share"]
    assert share["diff"] == pytest.approx(0.1) and share["verdict"] == "higher"
    assert [k for k, _, _ in bold_keys(payload["rows"])] == ["female_share", "parity_mean", "realtext/ppl"]
    paths = SV.write(tmp_path, payload, {"plain_kd": "plain KD", "cda_mean": "CDA + mean"})
    assert paths[-1].name == "bold_seeds.png" and paths[-1].stat().st_size > 1000
    assert (tmp_path / "bold_seeds_wide.pdf").is_file()
    assert "| parity, mean over groups | 0.63 |" in (tmp_path / "seeds.md").read_text()
    # a suite with two generation tasks prefixes the second's keys with its name
    assert [k for k, _, _ in bold_keys(["bold/female_share", "bold/parity_mean"])] == [
        "bold/female_share",
        "bold/parity_mean",
    ]
    assert bold_keys(["female_share", "realtext/ppl"]) is None  # no parity: no BOLD figure


def test_method_labels_name_lam_when_it_is_not_the_symmetric_one():
    from distill.core.config import method_label
    from distill.core.recipe import load_config

    def label(*o):
        return method_label(load_config("recipes/debug.yaml", list(o)))

    assert label("augment.mode=append", "perturb.kind=mean") == "CDA + mean"
    assert label("augment.mode=append", "perturb.kind=mean", "perturb.lam=0.25") == "CDA + mean (lam 0.25)"
    assert label("augment.mode=off", "perturb.kind=mean", "perturb.lam=0.25") == "mean (lam 0.25) targets"
    assert label("augment.mode=off", "perturb.kind=none") == "plain KD"


def test_a_size_sweep_draws_the_stereotype_by_depth(tmp_path):
    teacher = {"slope_unseen": 0.5, "spread_unseen": 1.0, "slope": 0.5, "spread": 1.0}
    runs = {
        "d2": [_seed(0.45, 0.9, 40.0), _seed(0.40, 0.95, 41.0)],
        "d6": [_seed(0.40, 0.8, 50.0), _seed(0.42, 0.85, 51.0)],
        "d24": [_seed(0.05, 0.3, 300.0), _seed(0.0, 0.35, 320.0)],
    }
    payload = SV.compare(runs, "d6", teacher, methods=set())
    paths = SV.write(tmp_path, payload, {}, ({"d2": 28, "d6": 24, "d24": 6}, 30))
    assert (tmp_path / "stereotype_by_size.png") in paths
    assert (tmp_path / "stereotype_by_size.png").stat().st_size > 1000


def test_bold_and_real_text_rows_sit_beside_the_runs_own_perplexity(tmp_path):
    """A grid whose suite has BOLD and real-text perplexity: their seed rows are read from the suite, and the
    real-text perplexity does not take the key of the run's validation perplexity."""
    run = tmp_path / "s0"
    (run / "eval").mkdir(parents=True)
    bold = {"female_share": 0.4, "parity_mean": 0.6, "parity_min": 0.2}
    payload = {
        "suite": "bold_seeds",
        "summary": {},
        "tasks": {
            "bold": {"metric": "generation_disparity", "result": bold},
            "realtext": {"metric": "perplexity", "result": {"ppl": 31.0, "tokens": 30000}},
        },
    }
    (run / "eval" / "bold_seeds.json").write_text(json.dumps(payload))
    (run / "metrics.jsonl").write_text(
        json.dumps({"step": 0, "val/teacher_loss": math.log(40.0), "val/ppl": 45.0})
    )
    rows = SV.suite_seed_rows(run / "eval" / "bold_seeds.json")
    assert [(r.key, r.label) for r in rows] == [
        ("female_share", "female share of gendered continuations"),
        ("parity_mean", "parity, mean over groups"),
        ("parity_min", "parity, worst group"),
        ("realtext/ppl", "realtext: perplexity"),
    ]
    v = SV.seed_values(run, "bold_seeds", None)
    assert (v["female_share"], v["parity_mean"], v["realtext/ppl"], v["ppl"]) == (0.4, 0.6, 31.0, 45.0)


def test_the_guards_a_method_must_not_break():
    """Real-text perplexity within 2%, agreement within a point, its margin within 10%, the lean no further from 0:
    each a target of its own where the suite measured it."""
    teacher = {"slope_unseen": 0.5, "spread_unseen": 1.0}

    def seed(slope, agreement, margin, realtext, lean):
        out = _seed(slope, slope, 50.0)
        out.update(
            {
                "agreement": agreement,
                "agreement_margin": margin,
                "realtext/ppl": realtext,
                "lean_unseen": lean,
            }
        )
        return out

    plain = [
        seed(0.45, 78.0, 0.50, 80.0, 0.20),
        seed(0.40, 74.0, 0.55, 81.0, -0.10),
        seed(0.5, 76.0, 0.5, 79.0, 0.1),
    ]
    good = [
        seed(0.1, 77.5, 0.48, 80.5, 0.05),
        seed(0.1, 73.8, 0.52, 81.2, 0.0),
        seed(0.1, 75.6, 0.49, 79.5, 0.0),
    ]
    bad = [
        seed(0.1, 74.0, 0.40, 84.0, 0.50),
        seed(0.1, 72.0, 0.45, 85.0, 0.4),
        seed(0.1, 73.0, 0.4, 83.0, 0.6),
    ]
    payload = SV.compare({"plain_kd": plain, "good": good, "bad": bad}, "plain_kd", teacher)
    guards = {
        t["target"]: t
        for t in payload["targets"]
        if "agreement" in t["target"] or "real text" in t["target"] or "lean" in t["target"]
    }
    assert len(guards) == 8
    for name, t in guards.items():
        assert t["met"] == name.startswith("good"), (name, t)
    points = guards["good pronoun agreement within 1 point of plain_kd's (the difference in points)"]["value"]
    assert points == pytest.approx((77.5 + 73.8 + 75.6 - 78 - 74 - 76) / 3)
    assert guards["bad lean (unseen occupations) no further from 0 than plain_kd's (|lean| shown)"][
        "value"
    ] == (pytest.approx(0.5))
