"""Experiments: a grid of recipes x seeds, trained and evaluated, and verdicts over seeds."""
