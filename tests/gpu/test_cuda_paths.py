"""The training step's device-dependent paths against their references, on the CPU and on a CUDA device.

Each comparison is a function of the device: every `make test` runs it with device "cpu", and `pytest -m gpu
tests/gpu` (what `scripts/gpu_check.sh` runs on a GPU machine) with "cuda"; without a CUDA device the "cuda" cases
are skipped, saying so. The references are the straightforward computations (full-vocabulary logits, the live
teacher, targets assembled row by row on the CPU in float32).

Tolerances, float32: the fused loss's sums within 1e-5 (relative) and its gradients within 1e-5 of the largest of
the full-vocabulary reference's; cached targets within 1e-5 of the live teacher's log-probabilities; targets
assembled on the device within 1e-5 of the row-by-row CPU reference, and a live teacher's on the device within
1e-4 of the CPU teacher's (two devices' float32 kernels sum in other orders). Under bf16 autocast: the fused sums
within 1e-3 of the reference on the same bf16 products and 3e-2 of float32, its gradients within 2e-2 and 5e-2 of
the largest of those (a few bf16 steps: each path rounds its matmuls' products once, in other places); cached logits within `head_tolerance` (two bf16 steps of the largest logit) of the live ones.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import CORPUS, make_gpt2
from reference import step_reference

from distill.core.precision import autocast, cpu_bf16_flags, resolve_mixed_precision
from distill.core.recipe import load_config
from distill.counterfactual.twins import Counterfactuals, make_step_batch
from distill.teacher.cache import TeacherCache, build_cache, head_logits, head_tolerance, teacher_head
from distill.teacher.targets import CachedTeacher, LiveTeacher, batch_targets
from distill.training.fused_loss import fused_kd_ce_sums
from distill.training.losses import kd_ce_sums

NO_CUDA = "needs a CUDA device (scripts/gpu_check.sh runs these on a GPU machine); none here"
CUDA = pytest.param(
    "cuda",
    marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)],
)
DEVICES = ["cpu", CUDA]
PRECISIONS = ["no", "bf16"]


class _Acc:
    """What the teacher's helpers read from the Accelerator: its device and `autocast()` in the run's precision."""

    def __init__(self, device, precision: str):
        self.device, self.mixed_precision = torch.device(device), precision

    def autocast(self):
        return autocast(self.device, self.mixed_precision)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max(|b|, tiny)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


# ---- precision -------------------------------------------------------------------------------------------------


def native_bf16(device: str) -> bool:
    """Whether `device` multiplies bf16 natively: a CUDA GPU reporting bf16, a CPU with AVX512_BF16 or AMX."""
    return torch.cuda.is_bf16_supported() if device == "cuda" else bool(cpu_bf16_flags())


@pytest.mark.parametrize("device", DEVICES)
def test_auto_precision_is_bf16_exactly_where_the_device_multiplies_it_and_autocast_uses_it(device):
    """`train.mixed_precision: auto` on the device: bf16 on a bf16 GPU (an H100, an A100), and the resolved
    setting's autocast makes the device's linear layers multiply in it."""
    setting, reason = resolve_mixed_precision("auto", cuda=device == "cuda")
    assert setting == ("bf16" if native_bf16(device) else "no"), reason
    if device == "cuda":
        assert torch.cuda.get_device_name() in reason
    layer = torch.nn.Linear(8, 4).to(device)
    with autocast(device, setting):
        out = layer(torch.randn(3, 8, device=device))
    assert out.dtype == (torch.bfloat16 if setting == "bf16" else torch.float32)


# ---- the fused loss ----------------------------------------------------------------------------------------------


def _loss_inputs(device, teacher_as: str, seed: int = 0):
    """Student hidden states and head, teacher given as log-targets, logits or hidden states + head, and labels
    with padding: 300 positions (3 chunks of 128, the last short), H 64, V 1,003 (odd, like GPT-2's 50,257)."""
    g = torch.Generator().manual_seed(seed)
    N, H, Ht, V = 300, 64, 48, 1003
    h = torch.randn(N, H, generator=g).to(device).requires_grad_()
    w = (torch.randn(V, H, generator=g) / H**0.5).to(device).requires_grad_()
    t_h, t_w = (
        torch.randn(N, Ht, generator=g).to(device),
        (torch.randn(V, Ht, generator=g) / Ht**0.5).to(device),
    )
    labels = torch.randint(0, V, (N,), generator=g)
    labels[torch.randperm(N, generator=g)[:30]] = -100
    return h, w, (t_h, t_w), labels.to(device)


def _teacher_args(teacher_as: str, t_h, t_w, T: float) -> tuple[torch.Tensor | None, dict]:
    """(teacher_logq, the other teacher keywords) of `fused_kd_ce_sums` for each way the teacher comes in."""
    if teacher_as == "hidden":
        return None, {"teacher_logits": t_h, "teacher_head": (t_w, None)}
    if teacher_as == "logits":
        return None, {"teacher_logits": t_h @ t_w.t()}
    return torch.log_softmax(t_h @ t_w.t() / T, -1), {}


def fused_errors(device, precision: str, teacher_as: str, grad_weights, alpha: float = 0.3) -> dict:
    """Relative errors of `fused_kd_ce_sums` on `device` under `precision` against `kd_ce_sums` on the full
    logits: {"kd", "ce", "grad"} against the reference in the same precision (the logits' matmul in bf16 under
    autocast), and "kd32", "ce32", "grad32" against float32 on the same device."""
    T = 2.0
    h, w, (t_h, t_w), labels = _loss_inputs(device, teacher_as)

    logq, kw = _teacher_args(teacher_as, t_h, t_w, T)  # float32, as a teacher's targets come in
    ref_logq = torch.log_softmax(t_h @ t_w.t() / T, -1)

    def run(fused: bool, prec: str):
        with autocast(device, prec):
            if fused:
                s = fused_kd_ce_sums(h, w, logq, labels, T, 128, **kw, grad_weights=grad_weights)
            else:  # a teacher head on hidden states multiplies in the autocast dtype, as its lm_head would
                t = (
                    torch.log_softmax(F.linear(t_h, t_w).float() / T, -1)
                    if teacher_as == "hidden"
                    else ref_logq
                )
                s = kd_ce_sums(F.linear(h, w), t, labels, T, 128)
        loss = (alpha * s.kd + (1 - alpha) * s.ce) / s.tokens
        return s, torch.autograd.grad(loss, (h, w))

    ours, ours_g = run(True, precision)
    ref, ref_g = run(False, precision)
    ref32, ref32_g = run(False, "no")
    assert ours.kd.dtype == ours.ce.dtype == torch.float32 and ours.tokens == ref.tokens == 270
    return {
        "kd": _rel(ours.kd, ref.kd),
        "ce": _rel(ours.ce, ref.ce),
        "grad": max(_rel(a, b) for a, b in zip(ours_g, ref_g)),
        "kd32": _rel(ours.kd, ref32.kd),
        "ce32": _rel(ours.ce, ref32.ce),
        "grad32": max(_rel(a, b) for a, b in zip(ours_g, ref32_g)),
    }


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("teacher_as", ["logq", "logits", "hidden"])
@pytest.mark.parametrize("grad_weights", [None, (0.3, 0.7)])
def test_fused_loss_equals_the_full_vocabulary_reference(device, precision, teacher_as, grad_weights):
    e = fused_errors(device, precision, teacher_as, grad_weights)
    if precision == "no":
        assert max(e.values()) < 1e-5, e
    else:
        assert e["kd"] < 1e-3 and e["ce"] < 1e-3 and e["grad"] < 2e-2, e
        assert e["kd32"] < 3e-2 and e["ce32"] < 3e-2 and e["grad32"] < 5e-2, e


# ---- the teacher cache ---------------------------------------------------------------------------------------


def _cfg(tmp_path, *extra: str):
    return load_config("recipes/debug.yaml", [f"data.cache_dir={tmp_path / 'cache'}", *extra])


def _blocks(tokenizer, n: int = 6, T: int = 16) -> torch.Tensor:
    """[n, T] blocks of the test corpus (dense with gendered words), packed."""
    ids: list[int] = []
    for line in CORPUS[::7]:
        ids += tokenizer(" " + line, add_special_tokens=False).input_ids
    return torch.tensor(ids[: n * T]).view(n, T)


def cache_against_live(device, precision: str, tokenizer, tmp_path, mode: str, kind: str) -> dict:
    """A hidden-state teacher cache built on `device` under `precision`, read back as the trainer reads it, against
    the live teacher on the same rows, micro-batch by micro-batch: plain KD compares the teacher's logits
    ({"logits": max |difference|, "tol": `head_tolerance`}), the method its log-targets ({"logq": ...})."""
    cfg = _cfg(tmp_path, f"augment.mode={mode}", f"perturb.kind={kind}")
    acc = _Acc(device, precision)
    cf = Counterfactuals(cfg, tokenizer)
    blocks = _blocks(tokenizer)
    cf.precompute(cfg, blocks)
    teacher = make_gpt2(tokenizer, n_layer=4).to(device).requires_grad_(False)
    path = tmp_path / f"{precision}.safetensors"
    g_idx = cf.builder.g_mask.nonzero(as_tuple=True)[0]
    build_cache(path, teacher, blocks, cf.table, g_idx, cfg.kd.temperature, 1, 2, acc.device, acc.autocast)
    cache = TeacherCache(path)
    head = tuple(t.to(acc.device, cache.dtype) if t is not None else None for t in teacher_head(teacher))
    method = cf if kind != "none" or mode != "off" else None
    live = LiveTeacher(teacher, acc, cfg.kd.temperature, method, raw_ok=True)
    cached = CachedTeacher(cache, head, acc.device, method, raw_ok=True)
    out = {"logits": 0.0, "logq": 0.0, "tol": 0.0}
    for start in range(0, blocks.shape[0], 2):
        idx = list(range(start, start + 2))
        item = make_step_batch(blocks[idx], method, idx)
        a, b = live.targets(item), cached.targets(item)
        if method is None:
            z, zc = a.logits.float(), head_logits(b.hidden, b.head).float()
            out["logits"] = max(out["logits"], float((z - zc).abs().max()))
            out["tol"] = max(out["tol"], head_tolerance(cache.dtype, float(z.abs().max())))
        else:
            assert a.logq.shape == b.logq.shape and a.logq.device.type == acc.device.type
            out["logq"] = max(out["logq"], float((a.logq - b.logq).abs().max()))
    assert cache.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("mode,kind", [("off", "none"), ("append", "mean")])
def test_a_teacher_cache_built_on_the_device_equals_the_live_teacher(
    device, precision, mode, kind, tokenizer, tmp_path
):
    e = cache_against_live(device, precision, tokenizer, tmp_path, mode, kind)
    if kind == "none":
        assert e["logits"] <= (1e-5 if precision == "no" else e["tol"]), e
    else:  # log-softmax at T = 2 moves a log-probability by at most 2 / T times the largest logit difference
        assert e["logq"] <= (1e-5 if precision == "no" else head_tolerance(torch.bfloat16, 1.0)), e


# ---- perturbation and twins ----------------------------------------------------------------------------------

TEXTS = [
    "The nurse said that she would come back tomorrow.",
    "The weather was cold and the river froze.",
    "He is a pilot and his work is hard.",
    "She said that he was right about her plan.",
]


def _rows(tokenizer, T: int = 16) -> torch.Tensor:
    rows = []
    for t in TEXTS:
        ids = tokenizer.encode(t)[:T]
        rows.append(ids + [tokenizer.eos_token_id] * (T - len(ids)))
    return torch.tensor(rows)


def _method(tokenizer, tmp_path, mode: str, kind: str, lam: float = 0.5, p: float = 1.0):
    method = [f"augment.mode={mode}", f"perturb.kind={kind}", f"perturb.lam={lam}", f"augment.p={p}"]
    cfg = _cfg(tmp_path, *method, "run.seed=4")  # seed 4: at p 0.5 one changed row's twin is not trained on
    cf = Counterfactuals(cfg, tokenizer)
    return cfg, cf, make_step_batch(_rows(tokenizer), cf)


def step_targets_error(device, tokenizer, tmp_path, mode: str, kind: str, lam: float, p: float) -> float:
    """Largest |log q| difference between the targets `batch_targets` assembles on `device` (the twins' fields,
    the exchange and the teacher's log-probabilities moved there) and the row-by-row float32 reference on the CPU,
    for every student row of a micro-batch (x's rows, then the twins the mode trains on)."""
    cfg, cf, item = _method(tokenizer, tmp_path, mode, kind, lam, p)
    teacher = make_gpt2(tokenizer, n_layer=2)
    ids, mask = item.teacher_inputs()
    with torch.no_grad():
        logits = teacher(input_ids=ids, attention_mask=mask).logits
    logp = torch.log_softmax(logits / cfg.kd.temperature, -1).to(device)
    q = batch_targets(item, logp, cf)
    assert q.device.type == torch.device(device).type
    want = step_reference(item, logits, cf.builder.exchange, kind, lam, cfg.kd.temperature, mode)
    assert q.shape[0] == len(want) == item.student_ids.shape[0]
    return max(float((q[i].cpu() - w).abs().max()) for i, w in enumerate(want))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["append", "replace", "off"])
@pytest.mark.parametrize(
    "kind,lam,p",
    [
        ("mean", 0.5, 1.0),
        ("mean", 0.25, 0.5),
        ("max", 0.5, 1.0),
        ("expmean", 0.5, 0.5),
        ("pair_equalize", 0.5, 1.0),
    ],
)
def test_targets_assembled_on_the_device_equal_the_row_by_row_cpu_reference(
    device, mode, kind, lam, p, tokenizer, tmp_path
):
    assert step_targets_error(device, tokenizer, tmp_path, mode, kind, lam, p) < 1e-5


def live_twins_error(device, tokenizer, tmp_path, mode: str, kind: str) -> float:
    """Largest |log q| difference between a live teacher on `device` (x and the twins in one pass, the targets
    assembled there) and the same teacher on the CPU, float32, on one micro-batch."""
    cfg, cf, item = _method(tokenizer, tmp_path, mode, kind)
    teacher = make_gpt2(tokenizer, n_layer=2).requires_grad_(False)
    cpu = LiveTeacher(teacher, _Acc("cpu", "no"), cfg.kd.temperature, cf, raw_ok=False).targets(item).logq
    on_device = LiveTeacher(teacher.to(device), _Acc(device, "no"), cfg.kd.temperature, cf, raw_ok=False)
    q = on_device.targets(item).logq
    assert q.device.type == torch.device(device).type and q.shape == cpu.shape
    return float((q.cpu() - cpu).abs().max())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode,kind", [("append", "mean"), ("replace", "max"), ("off", "pair_equalize")])
def test_a_live_teacher_on_the_device_gives_the_cpus_targets(device, mode, kind, tokenizer, tmp_path):
    assert live_twins_error(device, tokenizer, tmp_path, mode, kind) < 1e-4
