"""Where numbers go: `metrics.jsonl` in the run directory and Weights & Biases (through Accelerate's tracker).

W&B runs offline unless a key is present (`mode: auto`); an offline run directory is uploaded later with
`wandb sync <run_dir>/wandb/offline-run-*`. Keys are never written to logs, saved configs or the W&B config.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

_SECRET_KEY = re.compile(r"(^|[_-])(api[_-]?key|key|token|secret|password|passwd)$", re.IGNORECASE)


def redact(obj: Any) -> Any:
    """Replace values of secret-looking keys with '***' (recursively)."""
    if isinstance(obj, dict):
        return {k: ("***" if _SECRET_KEY.search(str(k)) and v else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def wandb_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


class MetricsLog:
    """Append-only `metrics.jsonl`; on resume, lines past the resumed step are dropped so no step appears twice."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if rec.get("step", 0) <= resume_step:
                    kept.append(line)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(k + "\n" for k in kept))
            os.replace(tmp, self.path)
        elif resume_step is None and self.path.exists():
            self.path.unlink()

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        rec = {"step": step}
        for k, v in metrics.items():
            if isinstance(v, float) and not math.isfinite(v):
                v = str(v)
            rec[k] = v
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
