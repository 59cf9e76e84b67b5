"""The ground every layer stands on: the recipe's schema and loader, errors, defaults, shipped files, atomic
writes and fingerprints, the run folder, tracking, and the machine (precision, CPU heap, worker pool)."""
