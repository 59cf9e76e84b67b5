"""The log-ratio term (`kd.log_ratio`): zero when the student's log-ratios equal the target's, gradient only on
G's columns, equal to a full-vocabulary autograd reference, blind to positions whose pair mass is below the floor,
the same on the fused and unfused paths, and a debug run that logs it and moves the student's gap."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import debug_overrides

from distill.core.recipe import load_config
from distill.counterfactual.exchange import Exchange
from distill.training.log_ratio import (
    FLOOR,
    GenderedSides,
    gendered_sides,
    log_ratio_sum,
    student_columns,
    target_columns,
)

V, T, M0 = 12, 2.0, 0.02


def _exchange() -> Exchange:
    """Tokens 1 <-> 2 and 3 <-> 4 are one-to-one pairs; {5, 6} (female) against {7} (male) is a word group."""
    pi = torch.arange(V)
    pi[1], pi[2], pi[3], pi[4] = 2, 1, 4, 3
    groups = torch.tensor([[[5, 6], [7, -1]]])
    g = torch.zeros(V, dtype=torch.bool)
    g[1:8] = True
    return Exchange(pi, groups, torch.zeros(V, dtype=torch.bool), g)


def _reference(z: torch.Tensor, logq: torch.Tensor, temperature: float, mass: float) -> torch.Tensor:
    """The term written out over the full vocabulary, side pair by side pair."""
    total = z.new_zeros(())
    q = logq.exp()
    for f, m in (([1], [2]), ([3], [4]), ([5, 6], [7])):
        g = temperature * (
            torch.logsumexp(z[:, f] / temperature, -1) - torch.logsumexp(z[:, m] / temperature, -1)
        )
        r = temperature * (torch.logsumexp(logq[:, f], -1) - torch.logsumexp(logq[:, m], -1))
        pm = q[:, f + m].sum(-1)
        w = torch.where(pm >= FLOOR * mass, (pm / mass).clamp(max=1.0), torch.zeros_like(pm))
        total = total + (w * (g - r) ** 2).sum()
    return total


def test_the_sides_of_an_exchange():
    s = gendered_sides(_exchange())
    assert s.cols.tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert s.female.tolist() == [[0, -1], [2, -1], [4, 5]] and s.male.tolist() == [[1, -1], [3, -1], [6, -1]]


def test_zero_when_the_student_has_the_targets_log_ratios():
    torch.manual_seed(0)
    logq = torch.log_softmax(torch.randn(6, V), -1)
    s = gendered_sides(_exchange())
    z = T * logq + torch.randn(6, 1)  # the target's own distribution at temperature T, any per-row shift
    assert log_ratio_sum(z[:, s.cols], logq[:, s.cols], s, T, M0).item() == pytest.approx(0.0, abs=1e-10)


def test_equals_the_full_vocabulary_reference_and_its_gradient_is_only_on_g():
    torch.manual_seed(1)
    logq = torch.log_softmax(torch.randn(8, V) * 2, -1)
    z = torch.randn(8, V, requires_grad=True)
    s = gendered_sides(_exchange())
    got = log_ratio_sum(z[:, s.cols], logq[:, s.cols], s, T, M0)
    z_ref = z.detach().clone().requires_grad_(True)
    want = _reference(z_ref, logq, T, M0)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    got.backward()
    want.backward()
    torch.testing.assert_close(z.grad, z_ref.grad)
    outside = torch.ones(V, dtype=torch.bool)
    outside[s.cols] = False
    assert torch.all(z.grad[:, outside] == 0) and torch.any(z.grad[:, s.cols] != 0)


def test_positions_below_the_mass_floor_do_not_count():
    torch.manual_seed(2)
    s = gendered_sides(_exchange())
    logits = torch.randn(4, V)
    logits[2, 1:8] -= 40.0  # row 2: G has (almost) no mass at all
    logq = torch.log_softmax(logits, -1)
    assert logq[2, 1:8].exp().sum() < FLOOR * M0
    z = torch.randn(4, V, requires_grad=True)
    full = log_ratio_sum(z[:, s.cols], logq[:, s.cols], s, T, M0)
    full.backward()
    assert torch.all(z.grad[2] == 0)
    keep = [0, 1, 3]
    assert log_ratio_sum(z[keep][:, s.cols], logq[keep][:, s.cols], s, T, M0).item() == pytest.approx(
        full.item()
    )


def test_student_and_target_columns_from_each_source():
    torch.manual_seed(3)
    H = 5
    hidden, weight, bias = torch.randn(6, H), torch.randn(V, H), torch.randn(V)
    cols = torch.tensor([1, 4, 7])
    logits = hidden @ weight.t() + bias
    torch.testing.assert_close(student_columns(hidden, weight, bias, None, cols), logits[:, cols])
    torch.testing.assert_close(student_columns(None, None, None, logits, cols), logits[:, cols])
    logq = torch.log_softmax(logits / T, -1)
    for got in (
        target_columns(logq, None, None, None, cols, T),
        target_columns(None, logits, None, None, cols, T),
        target_columns(None, None, hidden, (weight, bias), cols, T, rows=4),
    ):
        torch.testing.assert_close(got, logq[:, cols])


def test_the_sides_of_an_exchange_with_nothing_to_pair_are_empty():
    ex = Exchange.from_pi(torch.arange(V))
    s = gendered_sides(ex)
    assert isinstance(s, GenderedSides) and s.cols.numel() == 0 and s.female.shape[0] == 0


@pytest.mark.slow
@pytest.mark.parametrize("fused", ["true", "false"])
def test_a_debug_run_logs_the_term_and_it_lowers_the_gap_error(tmp_path, teacher_dir, fused):
    from distill.core.files import read_jsonl as read
    from distill.training.loop import train

    def run(weight: str, name: str):
        over = debug_overrides(
            tmp_path / name,
            teacher_dir,
            f"kd.log_ratio={weight}",
            f"kd.fused={fused}",
            "train.max_steps=6",
            "kd.log_ratio_mass=0.0001",
        )
        return [
            r
            for r in read(train(load_config("recipes/debug.yaml", over)) / "metrics.jsonl")
            if "train/loss" in r
        ]

    on = run("1.0", "on")
    assert all("train/loss_log_ratio" in r and math.isfinite(r["train/loss_log_ratio"]) for r in on)
    assert on[-1]["train/loss_log_ratio"] < on[0]["train/loss_log_ratio"]
    off = run("0.0", "off")
    assert all("train/loss_log_ratio" not in r for r in off)
