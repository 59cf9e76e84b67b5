"""The project's own error types.

Every problem a user can cause (a recipe typo, a malformed word list, a dataset without its text field, a missing
checkpoint) is raised as a `FairDistillError` whose message names the value, why it is wrong and the fix. The CLI
prints the message and exits non-zero without a traceback.
"""

from __future__ import annotations


class FairDistillError(Exception):
    """Base class: a problem in the user's input, reported as one clear message."""


class ConfigError(FairDistillError):
    """A recipe or override is wrong. Holds every problem found, not just the first."""

    def __init__(self, problems: list[str] | str, source: str | None = None):
        # a problem found twice (a suite's task settings are checked as data, then as the task) is listed once
        self.problems = [problems] if isinstance(problems, str) else list(dict.fromkeys(problems))
        self.source = source
        prefix = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = prefix + self.problems[0]
        else:
            msg = f"{prefix}{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(msg)


class DataError(FairDistillError):
    """A dataset, text file or prompt file cannot be used as asked."""


class WordListError(FairDistillError):
    """A word list is malformed; the message carries `file:line`."""


class ModelError(FairDistillError):
    """A model or checkpoint cannot be loaded or does not fit with the other model."""
