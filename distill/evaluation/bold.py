"""Prompts of BOLD (Dhamala et al., "BOLD: Dataset and Metrics for Measuring Biases in Open-Ended Language
Generation", FAccT 2021): the copy shipped in `eval/data/bold/`, any local file in BOLD's published JSON format, the
hub copy `AmazonScience/bold`, or the project's own profession templates.

BOLD's files (`prompts/<domain>_prompt.json` in github.com/amazon-science/bold) map group -> name -> prompts:
`{"nursing_specialties": {"Flight_nursing": ["Flight nursing is a field of ...", ...], ...}, ...}`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

from distill.core.errors import DataError
from distill.core.resources import resource_path

# BOLD's own prompt and Wikipedia files, shipped unchanged (eval/data/bold/README.md): the suites' offline default.
from distill.data.heldout import BOLD_DIR as BOLD_DIR
from distill.evaluation._data import load_hub

BOLD_DOMAINS = ("profession", "gender", "race", "religious_ideology", "political_ideology")
BOLD_HUB_ID = "AmazonScience/bold"
# The 18 groups of BOLD's profession domain, as spelled in its files.
BOLD_PROFESSION_GROUPS = (
    "metalworking_occupations",
    "sewing_occupations",
    "healthcare_occupations",
    "computer_occupations",
    "film_and_television_occupations",
    "artistic_occupations",
    "scientific_occupations",
    "entertainer_occupations",
    "dance_occupations",
    "nursing_specialties",
    "writing_occupations",
    "professional_driver_types",
    "engineering_branches",
    "mental_health_occupations",
    "theatre_personnel",
    "corporate_titles",
    "industrial_occupations",
    "railway_industry_occupations",
)
BOLD_GENDER_GROUPS = ("American_actors", "American_actresses")
# Project-written prompts in BOLD's format for its profession groups (not BOLD's prompts).
PROJECT_TEMPLATES = {"profession": "eval/data/profession_templates.json"}


def parse_bold(data: object, source: str) -> dict[str, list[str]]:
    """Validate BOLD's `{group: {name: [prompt, ...]}}` structure and flatten it to `{group: [prompt, ...]}`
    (names in file order, prompts stripped of surrounding whitespace, since a trailing space would become its own
    token before the model's first word)."""
    if not isinstance(data, dict):
        raise DataError(
            f"{source}: expected a JSON object {{group: {{name: [prompt, ...]}}}} (BOLD's format), "
            f"got {type(data).__name__}"
        )
    if not data:
        raise DataError(f"{source}: no groups")
    out: dict[str, list[str]] = {}
    for group, names in data.items():
        if not isinstance(names, dict):
            raise DataError(
                f"{source}: group {group!r} must map names to prompt lists ({{name: [prompt, ...]}}), "
                f"got {type(names).__name__}"
            )
        prompts: list[str] = []
        for name, plist in names.items():
            if not isinstance(plist, list):
                raise DataError(
                    f"{source}: group {group!r}, name {name!r}: prompts must be a list of strings, "
                    f"got {type(plist).__name__}"
                )
            for k, prompt in enumerate(plist):
                if not isinstance(prompt, str):
                    raise DataError(
                        f"{source}: group {group!r}, name {name!r}, prompt {k}: expected a string, "
                        f"got {type(prompt).__name__}"
                    )
                if prompt.strip():
                    prompts.append(prompt.strip())
        out[group] = prompts
    return out


def _from_hub(domain: str) -> dict[str, list[str]]:
    hint = (
        f"use the copy shipped with fairdistill (path='{BOLD_DIR}', the profession and gender domains), or "
        "download prompts/<domain>_prompt.json from github.com/amazon-science/bold and pass path=..."
    )
    ds = load_hub(BOLD_HUB_ID, None, "train", hint)
    out: dict[str, list[str]] = {}
    for row in ds:
        if row.get("domain") != domain:
            continue
        missing = [f for f in ("category", "prompts") if f not in row]
        if missing:
            raise DataError(f"{BOLD_HUB_ID}: rows lack field(s) {missing}; the hub copy's format has changed")
        out.setdefault(row["category"], []).extend(p.strip() for p in row["prompts"] if p and p.strip())
    if not out:
        raise DataError(f"{BOLD_HUB_ID}: no rows with domain {domain!r}")
    return out


def load_bold(
    domain: str = "profession",
    path: str | Path | None = None,
    max_per_group: int | None = None,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> dict[str, list[str]]:
    """BOLD prompts of one domain as `{group: [prompt, ...]}`.

    `path`: a JSON file in BOLD's format, or a folder holding `<domain>_prompt.json` (BOLD's file names; the
    shipped `BOLD_DIR` has the profession and gender domains); None loads the hub copy `AmazonScience/bold`. `groups` keeps only those groups (an unknown name is an error).
    `max_per_group` keeps a seeded random subset of each larger group, in file order; the subset of a group
    depends only on `seed` and the group's name, so adding groups does not change it.
    """
    if domain not in BOLD_DOMAINS:
        raise DataError(f"BOLD domain must be one of {BOLD_DOMAINS}, got {domain!r}")
    if max_per_group is not None and max_per_group < 1:
        raise DataError(f"max_per_group must be >= 1 (or None for all), got {max_per_group}")
    if path is None:
        prompts = _from_hub(domain)
    else:
        p = resource_path(path)
        if p.is_dir():
            p = p / f"{domain}_prompt.json"
        if not p.is_file():
            raise DataError(
                f"{p}: BOLD prompt file not found; pass a JSON file in BOLD's format or a folder with {domain}_prompt.json"
            )
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: not valid JSON ({e})") from e
        prompts = parse_bold(data, str(p))
    if groups is not None:
        unknown = [g for g in groups if g not in prompts]
        if unknown:
            raise DataError(
                f"groups {unknown} not in the BOLD {domain} prompts; available: {sorted(prompts)}"
            )
        prompts = {g: prompts[g] for g in groups}
    if max_per_group is not None:
        prompts = {g: subsample(v, max_per_group, seed, g) for g, v in prompts.items()}
    return prompts


def subsample(items: Sequence[str], k: int, seed: int, key: str = "") -> list[str]:
    """At most `k` items chosen at random (seeded by `seed` and `key`), kept in their original order."""
    if len(items) <= k:
        return list(items)
    rng = random.Random(f"{seed}:{key}")  # str seeds hash deterministically (not PYTHONHASHSEED-dependent)
    keep = sorted(rng.sample(range(len(items)), k))
    return [items[i] for i in keep]


def flatten_prompts(prompts_by_group: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str]]:
    """`(prompts, group_of_each_prompt)` in group order, to generate all groups in one batched call."""
    prompts: list[str] = []
    owners: list[str] = []
    for g, plist in prompts_by_group.items():
        prompts.extend(plist)
        owners.extend([g] * len(plist))
    return prompts, owners
