"""Evaluation: metric kinds, suites, the runner and the results reader.

    suites.py    a suite YAML (`eval/*.yaml`) validated into settings, before any model loads
    registry.py  the metric kinds; each is one module of `metrics/` (settings, data, run, headline, report rows)
    runner.py    evaluates one loaded model on a suite and writes `<suite>.json` (distill/reporting/evaluate.py
                 evaluates a checkpoint or a run and writes the card, W&B and the comparison)
    results.py   the one reader of `<suite>.json` (`SuiteResult`), and the run-folder paths of results

The scoring maths (gender polarity and parity, sentiment gap, perplexity and fluency, the pronoun probe, the
occupational stereotype, BOLD prompts and the downstream benchmarks) are pure functions in the other modules, so
tests check them on hand-made inputs; sampling lives in `distill/models/sampling.py`, shared with the transfer set.
Every metric is defined, with its citation, in `eval/README.md`.
"""
