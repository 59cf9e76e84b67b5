"""Downstream fairness benchmarks: CrowS-Pairs, StereoSet (intrasentence) and Bias-in-Bios.

Each module has a loader that reads the hub copy or a local file in the dataset's published format, and a scorer
that takes plain Python data (and, for the likelihood benchmarks, a `loglik` callable) so it can be tested with a
fake model.
"""
