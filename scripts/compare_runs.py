"""Record, or compare against a record, the exact results of short training runs over every teacher-target path.

    python scripts/compare_runs.py record OUT.json [--only NAME ...]
    python scripts/compare_runs.py compare OUT.json [--only NAME ...]

Each case runs `python -m distill train <recipe> <overrides>` in a fresh output folder and keeps what must not
move when the code around the maths is restructured: every metrics.jsonl value except timings, probe.json, the
SHA-256 of final/model.safetensors and the model card (final/README.md). `compare` reruns the cases and requires every number to be bit-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DEBUG = "recipes/debug.yaml"
SMOKE = "recipes/smoke.yaml"
PLAIN = ["augment.mode=off", "perturb.kind=none"]
CASES: dict[str, tuple[str, list[str]]] = {
    "default": (DEBUG, []),
    "plain_fused": (DEBUG, PLAIN),
    "plain_unfused": (DEBUG, [*PLAIN, "kd.fused=false"]),
    "unfused_mean": (DEBUG, ["kd.fused=false"]),
    "ce_only": (DEBUG, [*PLAIN, "kd.alpha=0"]),
    "replace_max": (DEBUG, ["augment.mode=replace", "augment.p=0.5", "perturb.kind=max"]),
    "expmean": (DEBUG, ["perturb.kind=expmean"]),
    "pair_equalize": (DEBUG, ["perturb.kind=pair_equalize", "augment.mode=off"]),
    "pair_equalize_append": (DEBUG, ["perturb.kind=pair_equalize"]),
    "augment_only": (DEBUG, ["perturb.kind=none"]),
    "cache_hidden_plain": (DEBUG, [*PLAIN, "teacher.cache={cache}"]),
    "cache_hidden_plain_unfused": (DEBUG, [*PLAIN, "kd.fused=false", "teacher.cache={cache}"]),
    "cache_hidden_mean": (DEBUG, ["teacher.cache={cache}"]),
    "cache_topk_plain": (DEBUG, [*PLAIN, "teacher.cache={cache}", "teacher.cache_format=topk"]),
    "cache_topk_max": (DEBUG, ["perturb.kind=max", "teacher.cache={cache}", "teacher.cache_format=topk"]),
    "smoke": (SMOKE, []),
    "smoke_cache_hidden": (SMOKE, ["teacher.cache={cache}"]),
}
TIMING = ("time/", "tokens_per_s", "step_time_s", "data_wait_frac")
COMMON = ["tracking.wandb=false", "eval.suite=null", "train.max_steps=4"]


def run_case(name: str, workdir: Path) -> dict:
    recipe, overrides = CASES[name]
    out = workdir / name
    cache = workdir / f"tcache_{name}"
    args = [o.format(cache=cache) for o in overrides] + COMMON + [f"run.output_dir={out}"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, "-m", "distill", "train", recipe, *args], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stderr[-4000:]}")
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    metrics = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        metrics.append({k: v for k, v in row.items() if not any(t in k for t in TIMING)})
    weights = hashlib.sha256((run_dir / "final" / "model.safetensors").read_bytes()).hexdigest()
    probe = json.loads((run_dir / "probe.json").read_text())
    card = (run_dir / "final" / "README.md").read_text().replace(str(workdir), "<tmp>")
    return {"metrics": metrics, "probe": probe, "final_sha256": weights, "card": card}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("record", "compare"))
    ap.add_argument("path", type=Path)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument(
        "--new-keys-ok",
        action="store_true",
        help="compare: metrics.jsonl keys the record lacks (a metric added on purpose) are listed, not compared",
    )
    args = ap.parse_args()
    names = args.only or list(CASES)
    with tempfile.TemporaryDirectory() as tmp:
        got = {}
        for name in names:
            got[name] = run_case(name, Path(tmp))
            print(f"{name}: {len(got[name]['metrics'])} metric rows, final {got[name]['final_sha256'][:12]}")
    if args.mode == "record":
        old = json.loads(args.path.read_text()) if args.path.is_file() else {}
        args.path.write_text(json.dumps({**old, **got}, indent=1, sort_keys=True))
        return 0
    want = json.loads(args.path.read_text())
    if args.new_keys_ok:
        added = set()
        for n in names:
            old_rows = (want.get(n) or {}).get("metrics") or []
            for row, old in zip(got[n]["metrics"], old_rows):
                added |= set(row) - set(old)
                for k in set(row) - set(old):
                    del row[k]
        print(f"metrics.jsonl keys the record lacks, left out: {sorted(added)}")
    bad = [n for n in names if got[n] != want.get(n)]
    for n in bad:
        w, g = want.get(n, {}), got[n]
        for key in ("final_sha256", "probe", "metrics", "card"):
            if w.get(key) != g.get(key):
                print(
                    f"{n}: {key} differs\n  want {json.dumps(w.get(key))[:600]}\n  got  {json.dumps(g.get(key))[:600]}"
                )
    print(f"{len(names) - len(bad)} / {len(names)} cases bit-identical")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
