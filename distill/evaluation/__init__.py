"""Evaluation building blocks: generation, gender polarity and parity, sentiment gap, perplexity and fluency, the
pronoun probe, BOLD prompts and the downstream benchmarks (CrowS-Pairs, StereoSet, Bias-in-Bios).

Scoring functions are pure (texts or numbers in, a small dict out) so a suite runner can call them and tests can
check them on hand-made inputs; only generation, perplexity, the probe and feature extraction touch a model.
Every metric is defined, with its citation, in `eval/README.md`.
"""
