#!/usr/bin/env bash
# Build the wheel and use it as a new user would: install it into a fresh virtualenv, then from a folder outside
# the checkout run `distill check`, a few steps of `distill train` on the packaged debug recipe and `distill eval`
# on the result. The new environment reuses the project venv's installed dependencies (a .pth file naming its
# site-packages) so torch is not installed twice; fairdistill itself comes only from the wheel.
# Usage: scripts/check_wheel.sh [VENV]   (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${1:-.venv}" && pwd)
ROOT=$(pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fairdistill-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
unset PYTHONPATH  # nothing from the checkout may be importable
export HF_HUB_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true TOKENIZERS_PARALLELISM=false
# Tiny models gain nothing from a second thread; on a busy 2-core machine the threads mostly wait on each other.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

step() { printf '\n== %s\n' "$*"; }

step "build the wheel"
"$VENV/bin/pip" wheel --quiet --no-deps --no-build-isolation --wheel-dir "$WORK/dist" "$ROOT"
WHEEL=$(ls "$WORK"/dist/fairdistill-*.whl)
echo "$WHEEL"

step "a fresh virtualenv that sees the project venv's dependencies, then the wheel"
"$VENV/bin/python" -m venv "$WORK/venv"
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
NEW_SITE=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$SITE" > "$NEW_SITE/_project_deps.pth"
"$WORK/venv/bin/python" -m pip install --quiet --no-deps --no-index "$WHEEL"

mkdir "$WORK/outside"
cd "$WORK/outside"
"$WORK/venv/bin/python" - "$NEW_SITE" <<'PY'
import sys
from pathlib import Path

import distill

where = Path(distill.__file__).resolve()
assert where.is_relative_to(Path(sys.argv[1]).resolve()), f"distill imported from {where}, not from the wheel"
print("distill imported from", where)
PY
RECIPE=$("$WORK/venv/bin/python" -c 'from distill.core.resources import resource_path; print(resource_path("recipes/debug.yaml"))')
case "$RECIPE" in "$NEW_SITE"/*) ;; *) echo "the packaged debug recipe resolved to $RECIPE"; exit 1;; esac
DISTILL="$WORK/venv/bin/distill"

step "distill check (by the packaged name and by its installed path)"
"$DISTILL" check recipes/debug.yaml > /dev/null
"$DISTILL" check "$RECIPE" train.max_steps=3 > /dev/null

step "distill train: 3 steps of the packaged debug recipe"
"$DISTILL" train recipes/debug.yaml train.max_steps=3 train.save_every=1 train.eval_every=0 train.probe_every=0
test -f runs/debug/final/model.safetensors
test -f runs/debug/checkpoints/step_3/complete

step "distill eval on the result (the quick suite, shortened)"
"$DISTILL" eval runs/debug --suite quick templates.max_per_group=1 templates.n_per_prompt=1 templates.max_new_tokens=8
test -f runs/debug/eval/quick.json

step "distill eval on BOLD's shipped prompts (eval/data/bold/ inside the wheel, no hub)"
"$DISTILL" eval runs/debug --suite bold_professions max_per_group=1 n_per_prompt=1 max_new_tokens=4 fluency=false
test -f runs/debug/eval/bold_professions.json
du -sh runs/debug
echo "wheel check passed"
