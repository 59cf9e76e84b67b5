"""Evaluation: suites of metrics run on a model, written as `<suite>.json`.

    suites.py     a suite YAML (`eval/*.yaml`) validated into settings, before any model loads
    registry.py   the metric kinds; each is one module of `metrics/`, holding its maths, settings, data, run,
                  headline numbers and report rows
    runner.py     evaluates one loaded model on a suite and writes `<suite>.json` (`reporting/evaluate.py`
                  evaluates a checkpoint or a run and writes the card, W&B and the comparison)
    results.py    the one reader of `<suite>.json` (`SuiteResult`), and the run-folder paths of results

Shared by several metrics: `scoring.py` (perplexity, fluency, sentence log-likelihoods), `polarity.py` (gender
polarity and sentiment of a text), `stereotype.py` (association, spread and lean of occupation scores), `bold.py`
(BOLD's prompts), `stats.py` (the bootstrap). Sampling lives in `distill/models/sampling.py`, shared with the
transfer set. Every metric is defined, with its citation, in `eval/README.md`.
"""
