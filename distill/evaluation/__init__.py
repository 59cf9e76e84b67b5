"""Evaluation: metric kinds, suites, the runner, the results reader and the report.

    suites.py    a suite YAML (`eval/*.yaml`) validated into settings, before any model loads
    registry.py  the metric kinds; each is one module of `kinds/` (settings, data, run, headline, report rows)
    runner.py    evaluates a checkpoint (or a run's teacher and student) and writes `<suite>.json`
    results.py   the one reader of `<suite>.json` (`SuiteResult`), and the run-folder paths of results
    report.py    side-by-side tables and figures of evaluated runs

The scoring maths (gender polarity and parity, sentiment gap, perplexity and fluency, the pronoun probe, the
occupational stereotype, BOLD prompts and the downstream benchmarks) are pure functions in the other modules, so
tests check them on hand-made inputs; sampling lives in `distill/sampling.py`, shared with the transfer set.
Every metric is defined, with its citation, in `eval/README.md`.
"""
