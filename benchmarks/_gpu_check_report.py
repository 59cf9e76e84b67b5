"""The GPU check's result: its JSON schema (a subset of JSON Schema, checked here without a library), the
Markdown table made from it, and both written under the output folder."""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA_ID = "fairdistill-gpu-check/1"
STATUSES = ["pass", "fail", "skipped", "dry-run"]
MODES = ["gpu", "dry-run", "forced-cpu"]

_NUM = {"type": "number"}
_STR = {"type": "string"}
_OPT_NUM = {"type": ["number", "null"]}
_STEP = {
    "type": "object",
    "required": ["wall_s", "tokens", "tokens_per_s", "mfu", "flop", "peak_bytes"],
    "properties": {"tokens": {"type": "integer"}, "peak_bytes": {"type": ["integer", "null"]}, "mfu": _NUM},
}
# the numbers each kind of part reports once it has run (status pass or dry-run), by the part name's prefix
NUMBERS = {
    "prerequisites": {"type": "object", "required": ["missing", "optional_missing", "versions"]},
    "tests": {
        "type": "object",
        "required": ["passed", "failed", "skipped", "tests"],
        "properties": {k: {"type": "integer"} for k in ("passed", "failed", "skipped")},
    },
    "bench": {
        "type": "object",
        "required": [
            "models",
            "device",
            "batch",
            "seq",
            "precision",
            "matmul_peak",
            "steps",
            "skipped",
            "ratios",
        ],
        "properties": {
            "steps": {
                "type": "object",
                "required": ["ce", "cached_kd", "method", "live_kd", "hf_kd"],
                "additionalProperties": _STEP,
            },
            "matmul_peak": {"type": "object", "required": ["n", "flop_per_s"]},
            "ratios": {"type": "array", "items": _STR},
        },
    },
    "train": {"type": "object", "required": ["command"], "properties": {"command": _STR}},
    "resume": {"type": "object", "required": ["command"], "properties": {"command": _STR}},
}
PART = {
    "type": "object",
    "required": ["name", "status", "seconds", "detail", "numbers"],
    "properties": {
        "name": _STR,
        "status": {"enum": STATUSES},
        "seconds": _NUM,
        "detail": _STR,
        "numbers": {"type": "object"},
        "log": _STR,
    },
}
SCHEMA = {
    "type": "object",
    "required": ["schema", "mode", "tiny", "ok", "started", "seconds", "device", "versions", "parts"],
    "properties": {
        "schema": {"enum": [SCHEMA_ID]},
        "mode": {"enum": MODES},
        "tiny": {"type": "boolean"},
        "ok": {"type": "boolean"},
        "started": _STR,
        "seconds": _NUM,
        "device": {"type": "object", "required": ["name", "cuda"], "properties": {"name": _STR}},
        "versions": {
            "type": "object",
            "required": ["python", "torch", "transformers", "accelerate"],
            "additionalProperties": {"type": ["string", "null"]},
        },
        "parts": {"type": "array", "items": PART},
    },
}
_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}


def _is(value, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


def problems(value, schema: dict, where: str = "$") -> list[str]:
    """Where `value` breaks `schema` (type, enum, required, properties, items, additionalProperties), as
    `$.parts[2].status: ...` lines; [] when it conforms."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            return [f"{where}: expected {' or '.join(kinds)}, got {type(value).__name__} {value!r:.60}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    out = []
    if isinstance(value, dict):
        out += [f"{where}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for k, v in value.items():
            sub = props.get(k, extra)
            if sub is False:
                out.append(f"{where}: unexpected key {k!r}")
            elif isinstance(sub, dict):
                out += problems(v, sub, f"{where}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            out += problems(v, schema["items"], f"{where}[{i}]")
    return out


def validate(result: dict) -> list[str]:
    """Problems of a check's result: the schema, then each run part's numbers against its kind's schema."""
    found = problems(result, SCHEMA)
    for i, part in enumerate(result.get("parts", []) if isinstance(result.get("parts"), list) else []):
        kind = str(part.get("name", "")).split(":")[0]
        if part.get("status") in ("pass", "dry-run") and kind in NUMBERS:
            found += problems(part.get("numbers"), NUMBERS[kind], f"$.parts[{i}].numbers")
    return found


def _mib(b) -> str:
    return "" if b is None else f"{b / 2**20:,.0f} MiB"


def _bench_rows(parts: list[dict]) -> list[str]:
    rows = []
    for part in parts:
        n = part["numbers"]
        if not part["name"].startswith("bench:") or "steps" not in n:
            continue
        for step, s in n["steps"].items():
            cells = (n["models"], f"{n['batch']} x {n['seq']}", step, f"{s['tokens_per_s']:,.0f}")
            rows.append("| " + " | ".join((*cells, _mib(s["peak_bytes"]), f"{100 * s['mfu']:.1f}%")) + " |")
        for step, why in n["skipped"].items():
            rows.append(f"| {n['models']} | | {step} | skipped: {why} | | |")
        rows.append(
            f"| | | matmul peak {n['matmul_peak']['n']}^3 bf16 | {n['matmul_peak']['flop_per_s'] / 1e12:.1f} TFLOP/s | | |"
        )
    return rows


def markdown(result: dict) -> str:
    """A short Markdown report: what ran where, each part's status, the step benchmark's numbers."""
    v, d = result["versions"], result["device"]
    n_fail = sum(p["status"] == "fail" for p in result["parts"])
    verdict = "every part passed" if result["ok"] else f"{n_fail} part(s) failed"
    lines = [
        f"# GPU check ({result['mode']}{', tiny sizes' if result['tiny'] else ''}): {verdict}",
        "",
        f"{d['name'] + ' (CUDA ' + d['cuda'] + ')' if d.get('cuda') else 'no CUDA device'}; Python {v['python']}, torch {v['torch']}, transformers "
        f"{v['transformers']}, accelerate {v['accelerate']}, trl {v.get('trl') or 'not installed'}; "
        f"{result['started']}, {result['seconds']:.0f} s",
        "",
        "| part | status | seconds | detail |",
        "|---|---|---|---|",
    ]
    for p in result["parts"]:
        detail = p["detail"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {p['name']} | {p['status']} | {p['seconds']:.1f} | {detail} |")
    bench = _bench_rows(result["parts"])
    if bench:
        lines += [
            "",
            "Training steps (fwd + bwd + AdamW, bf16 autocast; peak: torch.cuda.max_memory_allocated):",
            "",
        ]
        lines += [
            "| models | B x T | step | tokens/s | peak memory | MFU |",
            "|---|---|---|---|---|---|",
            *bench,
        ]
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path) -> tuple[Path, Path]:
    """gpu_check.json and gpu_check.md under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "gpu_check.json", out / "gpu_check.md"
    js.write_text(json.dumps(result, indent=1) + "\n")
    md.write_text(markdown(result))
    return js, md
