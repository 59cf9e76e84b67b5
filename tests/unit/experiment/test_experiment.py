"""The experiment grid on tiny models: every variant x seed trains and is evaluated, results/ holds the table,
the JSON and readable plots, and a second call resumes (trains nothing again)."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import debug_overrides

from distill.core.errors import ConfigError
from distill.experiment.grid import load_grid
from distill.experiment.runs import run_grid


@pytest.mark.slow
def test_grid_end_to_end(tmp_path, teacher_dir, monkeypatch):
    grid_file = tmp_path / "grid.yaml"
    common = debug_overrides(
        tmp_path,
        teacher_dir,
        "train.max_steps=3",
        "train.probe_every=0",
        "train.eval_every=0",
        "train.save_every=0",
        "tracking.wandb=false",
    )
    common = [c for c in common if not c.startswith("run.output_dir")]
    grid_file.write_text(
        yaml.safe_dump(
            {
                "base": "recipes/debug.yaml",
                "output_dir": str(tmp_path / "runs"),
                "results_dir": str(tmp_path / "results"),
                "seeds": [0, 1],
                "suite": "quick",
                "suite_overrides": [
                    "n_per_prompt=1",
                    "max_new_tokens=6",
                    "max_per_group=1",
                    "probe.max_professions=8",
                ],
                "common": common,
                "variants": {
                    "plain_kd": ["augment.mode=off", "perturb.kind=none"],
                    "cda_mean": ["augment.mode=append", "perturb.kind=mean"],
                },
            },
            sort_keys=False,
        )
    )
    import distill.core.cpu_heap

    trims = []
    monkeypatch.setattr(distill.core.cpu_heap, "release_free_memory", lambda: trims.append(1) or True)
    out = run_grid(load_grid(grid_file))
    assert len(trims) == 4  # the heap's free pages handed back after each of the 2 x 2 runs
    table = (out / "table.md").read_text()
    assert "| teacher |" in table and "| plain_kd |" in table and "| cda_mean |" in table
    assert "reference" in table
    data = json.loads((out / "results.json").read_text())
    assert [v["variant"] for v in data["variants"]] == ["plain_kd", "cda_mean"]
    cda = data["variants"][1]
    assert cda["gap_verdict"] in (
        "better",
        "worse",
        "no measurable difference",
        "no measurable difference (seeds disagree)",
    )
    assert len(cda["gap_diff_seeds"]) == 2 and cda["gap_diff_ci"][0] <= cda["gap_diff_ci"][1]
    assert "sentiment M - F" in table
    for row in data[
        "variants"
    ]:  # a number and its interval, or none when a side has no gendered continuation
        gap, ci = row["sentiment_gap"], row["sentiment_gap_ci"]
        assert (gap is None and ci == [None, None]) or (ci[0] <= gap <= ci[1] and -2 <= gap <= 2)
    assert [v["label"] for v in data["variants"]] == ["plain KD", "CDA + mean"]
    assert all(len(v["n_gendered"]) == 2 and len(v["n_probe_prompts"]) == 2 for v in data["variants"])
    for stem in ("pronoun_gap", "female_share"):  # PNG and PDF, one- and two-column
        for name in (f"{stem}.png", f"{stem}.pdf", f"{stem}_wide.png", f"{stem}_wide.pdf"):
            assert (out / name).stat().st_size > 1000, name
    assert "make experiment" in (out / "COMMANDS.md").read_text()
    # quick scores Winogender: seed-level verdicts on occupational stereotype, with the targets checked
    stereo = json.loads((out / "seeds.json").read_text())
    assert set(stereo["variants"]) == {"plain_kd", "cda_mean"}
    r_unseen = stereo["variants"]["cda_mean"]["metrics"]["r_bls_unseen"]
    assert len(r_unseen["seeds"]) == 2 and r_unseen["verdict"]
    assert all(isinstance(x, float) for x in stereo["variants"]["plain_kd"]["metrics"]["ppl"]["seeds"])
    md = (out / "seeds.md").read_text()
    assert "CDA + mean (vs plain KD)" in md and "Targets:" in md
    assert (out / "stereotype_seeds.png").stat().st_size > 1000

    # the archive (scores, configs, metrics; no weights) rebuilds the same verdicts, and only the given seeds
    from distill.experiment.grid import archive_runs
    from distill.experiment.summary import summarise

    grid = load_grid(grid_file)
    assert archive_runs(grid, tmp_path / "archive") == [
        "plain_kd_s0",
        "plain_kd_s1",
        "cda_mean_s0",
        "cda_mean_s1",
    ]
    assert not list((tmp_path / "archive").rglob("*.safetensors"))
    grid.output_dir, grid.results_dir = str(tmp_path / "archive"), str(tmp_path / "again")
    again = json.loads((summarise(grid) / "seeds.json").read_text())
    assert again["variants"] == stereo["variants"]
    table_again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert (
        table_again["variants"] == data["variants"]
    )  # female share, sentiment: from the archived generations
    grid.seeds, grid.results_dir = [1], str(tmp_path / "one")
    one = json.loads((summarise(grid) / "seeds.json").read_text())
    assert one["variants"]["cda_mean"]["metrics"]["r_bls_unseen"]["seeds"] == r_unseen["seeds"][1:]

    # resumes: nothing is trained again
    import distill.training.loop

    monkeypatch.setattr(distill.training.loop, "train", lambda cfg: pytest.fail("retrained a finished run"))
    run_grid(load_grid(grid_file))


def test_bad_grid_is_named(tmp_path):
    g = tmp_path / "g.yaml"
    g.write_text("base: recipes/debug.yaml\nvariants: {a: [kd.alpha=0.5]}\nseedz: [0]\n")
    with pytest.raises(ConfigError) as e:
        load_grid(g)
    assert "unknown key 'seedz'" in str(e.value) and "reference 'plain_kd' is not one of the variants" in str(
        e.value
    )


def test_bad_data_seed_is_named(tmp_path):
    g = tmp_path / "g.yaml"
    g.write_text("base: recipes/debug.yaml\nvariants: {plain_kd: []}\ndata_seed: per-seed\n")
    with pytest.raises(ConfigError, match="data_seed must be one of 'fixed', 'per_seed', got 'per-seed'"):
        load_grid(g)


@pytest.mark.parametrize(
    "path, n_variants, data_seeds",
    [
        ("recipes/experiments/smollm2_grid.yaml", 7, {0: 0, 1: 0}),
        ("recipes/experiments/smollm2_seeds.yaml", 2, {s: s for s in range(5)}),
        ("recipes/experiments/smollm2_24L_seeds.yaml", 2, {s: s for s in range(5)}),
        ("recipes/experiments/smollm2_24L_lam.yaml", 4, {s: s for s in range(5)}),
        ("recipes/experiments/smollm2_24L_variants.yaml", 6, {s: s for s in range(5)}),
        ("recipes/experiments/smollm2_24L_levers.yaml", 3, {0: 0}),
        ("recipes/experiments/smollm2_24L_lr.yaml", 2, {0: 0}),
        ("recipes/experiments/smollm2_24L_size.yaml", 4, {0: 0}),
        ("recipes/experiments/smollm2_24L_fp32.yaml", 2, {0: 0, 1: 1, 2: 2}),
        ("recipes/experiments/smollm2_24L_bold.yaml", 2, {s: s for s in range(5)}),
        ("recipes/experiments/smollm2_24L_log_ratio.yaml", 5, {s: s for s in range(5)}),
        ("recipes/experiments/smollm2_24L_log_ratio_winogender.yaml", 3, {s: s for s in range(5)}),
        ("recipes/experiments/smollm2_24L_names.yaml", 4, {s: s for s in range(5)}),
        ("recipes/experiments/smollm2_24L_erase.yaml", 3, {s: s for s in range(5)}),
    ],
)
def test_shipped_grids_validate_every_variant(path, n_variants, data_seeds):
    from distill.core.recipe import load_config
    from distill.data.transfer import data_seed
    from distill.experiment.grid import variant_overrides

    grid = load_grid(path)
    assert len(grid.variants) == n_variants and grid.reference in grid.variants
    assert grid.seeds == sorted(data_seeds)
    for v in grid.variants:
        for s, want in data_seeds.items():
            cfg = load_config(grid.base, variant_overrides(grid, v, s))
            assert cfg.run.seed == s and data_seed(cfg) == want


def test_the_command_prints_the_stereotype_verdicts_of_a_winogender_grid(tmp_path, monkeypatch, capsys):
    """A grid on the winogender suite has no probe table: `distill experiment` prints seeds.md instead (and
    exits 0), never a missing table.md."""
    import distill.experiment.summary
    from distill.cli import main

    out = tmp_path / "results"
    out.mkdir()
    (out / "seeds.md").write_text("Occupational stereotype on Winogender over 5 seeds.\n")
    monkeypatch.setattr(distill.experiment.summary, "summarise", lambda grid: out)
    assert main(["experiment", "recipes/experiments/smollm2_24L_levers.yaml", "--summarise-only"]) == 0
    printed = capsys.readouterr().out
    assert "Occupational stereotype on Winogender over 5 seeds." in printed and f"results: {out}" in printed


def test_a_bad_seed_list_is_named(capsys):
    from distill.cli import EXIT_USER_ERROR, main

    code = main(
        ["experiment", "recipes/experiments/smollm2_24L_levers.yaml", "--summarise-only", "--seeds", "0,,1"]
    )
    assert code == EXIT_USER_ERROR
    assert "--seeds '0,,1' is not a comma-separated list of seeds" in capsys.readouterr().err


def test_sentiment_gap_known_answer():
    import numpy as np

    from distill.experiment.summary import _sentiment_gap

    gap, (lo, hi) = _sentiment_gap([(np.array([0.5, 0.5, 0.5]), np.array([0.0, 0.0]))])
    assert gap == 0.5 and lo == hi == 0.5
    gap, (lo, hi) = _sentiment_gap(
        [(np.array([1.0, -1.0]), np.array([0.0])), (np.array([0.2]), np.array([]))]
    )
    assert gap == 0.0 and lo < 0 < hi  # the seed with no female continuation is left out
    assert (
        _sentiment_gap([(np.array([]), np.array([0.1]))])[0]
        != _sentiment_gap([(np.array([]), np.array([0.1]))])[0]
    )


def test_check_reproduction_names_what_moved(tmp_path):
    from distill.experiment.reproduction import check_reproduction

    def results(path, gap, share):
        row = {
            "variant": "plain_kd",
            "pronoun_gap": gap,
            "pronoun_gap_ci": [0.4, 0.6],
            "female_share": share,
            "female_share_ci": [0.3, 0.5],
            "sentiment_gap": None,
            "sentiment_gap_ci": [None, None],
            "perplexity": 100.0,
        }
        path.write_text(json.dumps({"variants": [row]}))
        return path

    first = results(tmp_path / "a.json", 0.5, 0.4)
    text, ok = check_reproduction(first, results(tmp_path / "b.json", 0.55, 0.45))
    assert ok and "yes" in text and "NO" not in text
    text, ok = check_reproduction(first, results(tmp_path / "c.json", 0.7, 0.45))
    assert not ok and "0.7 in [0.4, 0.6]: NO" in text


def test_commands_name_the_seeds_when_a_run_was_limited_to_some():
    from distill.experiment.summary import make_command

    grid = load_grid("recipes/experiments/smollm2_24L_fp32.yaml")
    assert make_command(grid) == "make experiment GRID=recipes/experiments/smollm2_24L_fp32.yaml"
    grid.seeds = [1, 2]
    assert (
        make_command(grid)
        == 'make experiment GRID=recipes/experiments/smollm2_24L_fp32.yaml ARGS="--seeds 1,2"'
    )


def test_the_bold_grid_puts_bold_and_real_text_in_the_seed_table():
    """The five-seed BOLD grid's suite has the BOLD subset, real-text perplexity and Winogender, each of a kind
    with seed rows (so seeds.md compares them over seeds), on BOLD's shipped files (no hub)."""
    from distill.evaluation.registry import kind
    from distill.evaluation.suites import load_suite

    grid = load_grid("recipes/experiments/smollm2_24L_bold.yaml")
    suite = load_suite(grid.suite, grid.suite_overrides)
    assert {n: t.metric for n, t in suite.tasks.items()} == {
        "bold": "generation_disparity",
        "realtext": "perplexity",
        "winogender": "winogender",
    }
    assert all(kind(t.metric).seed_rows for t in suite.tasks.values())
    assert suite.tasks["bold"].path == suite.tasks["realtext"].path == "eval/data/bold"
    assert suite.tasks["bold"].bootstrap == "prompts" and suite.tasks["realtext"].sample == 1000
