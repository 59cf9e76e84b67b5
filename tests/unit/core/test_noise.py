"""A run prints no known-harmless warning: each is fixed where it starts. The KV cache is passed by its current
name; tied weights are saved the way transformers expects; the single-process CPU launch says its thread count."""

from __future__ import annotations

import logging
import shutil
import subprocess
import warnings

import pytest
import torch
from conftest import make_gpt2

from distill.models.lm import cache_keyword
from distill.models.sampling import generate


def test_generation_uses_the_current_cache_argument(tokenizer):
    model = make_gpt2(tokenizer, n_layer=2, seed=0)
    import inspect

    assert cache_keyword(model) in inspect.signature(model.forward).parameters
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = generate(model, tokenizer, ["The nurse said that"], max_new_tokens=3, progress=False)
    assert len(out[0]) == 1
    assert not [w for w in caught if "past_key_values" in str(w.message)], [str(w.message) for w in caught]


def test_checkpoints_save_tied_weights_without_a_warning(tmp_path, tokenizer, caplog):
    from accelerate import Accelerator

    from distill.models.loading import drop_tied_weights

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(make_gpt2(tokenizer, n_layer=2, seed=0))
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # tied
    handle = accelerator.register_save_state_pre_hook(drop_tied_weights)
    try:
        with caplog.at_level(logging.WARNING):
            accelerator.save_state(str(tmp_path / "ckpt"), safe_serialization=True)
        assert "Removed shared tensor" not in caplog.text
        with torch.no_grad():
            model.transformer.wte.weight.add_(1.0)  # moved away from the saved values, then restored
        accelerator.load_state(str(tmp_path / "ckpt"))
    finally:
        handle.remove()
    fresh = make_gpt2(tokenizer, n_layer=2, seed=0)
    assert torch.equal(model.transformer.wte.weight, fresh.transformer.wte.weight)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # still tied


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_cpu_launch_passes_its_thread_count():
    cmd = ["make", "--no-print-directory", "-n", "distill", "VENV=/nonexistent", "STAMP=", "COMPARE="]
    line = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[0]
    assert "--accelerate-config recipes/accelerate/cpu.yaml" in line and "--cpu-threads " in line
    multi = cmd + ["ACCELERATE_CONFIG=recipes/accelerate/cpu_multiprocess.yaml", "NUM_PROCESSES=2"]
    line = subprocess.run(multi, capture_output=True, text=True, check=True).stdout.splitlines()[0]
    assert "--cpu-threads" not in line  # accelerate picks 1 per process there without a notice
