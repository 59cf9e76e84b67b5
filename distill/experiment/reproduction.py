"""Does a second run of a grid reproduce a committed table? Each number against the first run's 95% interval."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from distill.reporting.tables import fmt, markdown_table

log = logging.getLogger(__name__)

# (metric, its interval in results.json, label)
REPRODUCED = (
    ("pronoun_gap", "pronoun_gap_ci", "pronoun |gap|"),
    ("female_share", "female_share_ci", "female share"),
    ("sentiment_gap", "sentiment_gap_ci", "sentiment M - F"),
)


def check_reproduction(committed: Path, new: Path) -> tuple[str, bool]:
    """Does a second run reproduce a committed table? For every variant and every number that has an interval,
    is the second run's value inside the first run's 95% interval? Perplexity (no interval) is compared as a
    relative difference. Returns (markdown, all inside)."""
    a = {v["variant"]: v for v in json.loads(Path(committed).read_text())["variants"]}
    b = {v["variant"]: v for v in json.loads(Path(new).read_text())["variants"]}
    intro = (
        f"# Reproduction of {committed}\n\nSecond run: {new}. A number is reproduced when the second run's value lies "
        "inside the first run's 95% interval.\n\n"
    )
    header = ["variant", *(label for _, _, label in REPRODUCED), "perplexity (relative difference)"]
    rows = []
    ok = True
    for name, first in a.items():
        second = b.get(name)
        if second is None:
            rows.append([name] + ["not run"] * (len(REPRODUCED) + 1))
            ok = False
            continue
        cells = []
        for key, ci_key, _ in REPRODUCED:
            x, ci = second.get(key), first.get(ci_key) or [None, None]
            if x is None or None in ci:
                cells.append("n/a")
                continue
            inside = ci[0] <= x <= ci[1]
            ok = ok and inside
            cells.append(
                f"{fmt(first.get(key))} -> {fmt(x)} in [{fmt(ci[0])}, {fmt(ci[1])}]: {'yes' if inside else 'NO'}"
            )
        p1, p2 = first.get("perplexity"), second.get("perplexity")
        cells.append(f"{fmt(p1)} -> {fmt(p2)} ({(p2 - p1) / p1:+.2%})" if p1 and p2 else "n/a")
        rows.append([name, *cells])
    verdict = f"Every number inside its interval: {'yes' if ok else 'no'}."
    return f"{intro}{markdown_table(header, rows)}\n\n{verdict}\n", ok
