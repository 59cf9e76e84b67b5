"""The CPU heap setting (distill/cpu_heap.py): FAIRDISTILL_CPU_HEAP is checked, `auto` keeps freed blocks on a
CPU run only, `system` leaves glibc alone, and the trainer logs what it chose."""

from __future__ import annotations

import platform

import pytest

from distill import cpu_heap
from distill.errors import ConfigError

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_the_environment_variable_is_checked_and_defaults_to_auto():
    assert cpu_heap.setting_from_env({}) == "auto"
    assert cpu_heap.setting_from_env({"FAIRDISTILL_CPU_HEAP": " Keep "}) == "keep"
    assert cpu_heap.setting_from_env({"FAIRDISTILL_CPU_HEAP": "system"}) == "system"
    with pytest.raises(ConfigError) as e:
        cpu_heap.setting_from_env({"FAIRDISTILL_CPU_HEAP": "jemalloc"})
    assert "FAIRDISTILL_CPU_HEAP='jemalloc'" in str(e.value) and "auto" in str(e.value)


def test_a_bad_setting_is_refused_before_anything_changes(monkeypatch):
    monkeypatch.setenv("FAIRDISTILL_CPU_HEAP", "fast")
    with pytest.raises(ConfigError, match="keep or system"):
        cpu_heap.configure_cpu_heap()
    with pytest.raises(ConfigError, match="use one of auto, keep, system"):
        cpu_heap.configure_cpu_heap("fast")


def test_system_and_a_cuda_machine_leave_the_allocator_alone(monkeypatch):
    monkeypatch.setattr(cpu_heap, "_applied", False)
    calls = []
    monkeypatch.setattr(cpu_heap, "_glibc", lambda: calls.append("glibc"))
    kept, why = cpu_heap.configure_cpu_heap("system")
    assert (kept, calls) == (False, []) and "system" in why
    kept, why = cpu_heap.configure_cpu_heap("auto", cuda=True)
    assert (kept, calls) == (False, []) and "CUDA" in why


class _FakeLibc:
    def __init__(self, result=1):
        self.calls, self.result = [], result

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return self.result


def test_keep_sets_mmap_max_0_and_a_2_gib_trim_threshold_once(monkeypatch):
    monkeypatch.setattr(cpu_heap, "_applied", False)
    libc = _FakeLibc()
    monkeypatch.setattr(cpu_heap, "_glibc", lambda: libc)
    kept, why = cpu_heap.configure_cpu_heap("auto", cuda=False)
    assert kept and "M_MMAP_MAX=0" in why and "FAIRDISTILL_CPU_HEAP=system" in why
    assert libc.calls == [(-4, 0), (-1, 2**31 - 1)]
    assert cpu_heap.configure_cpu_heap("keep", cuda=True)[0]  # keep also applies where a GPU is
    assert len(libc.calls) == 2  # idempotent: mallopt is called once per process
    kept, why = cpu_heap.configure_cpu_heap("system")
    assert kept and "already changed" in why  # honest about a process that changed it earlier


def test_a_refused_mallopt_or_another_c_library_changes_nothing(monkeypatch):
    monkeypatch.setattr(cpu_heap, "_applied", False)
    monkeypatch.setattr(cpu_heap, "_glibc", lambda: _FakeLibc(result=0))
    assert cpu_heap.configure_cpu_heap("keep") == (False, "glibc refused mallopt: its defaults")
    monkeypatch.setattr(cpu_heap, "_glibc", lambda: None)
    kept, why = cpu_heap.configure_cpu_heap("keep")
    assert not kept and "not glibc" in why


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_on_glibc_the_real_mallopt_accepts_the_settings(monkeypatch):
    monkeypatch.setattr(cpu_heap, "_applied", False)
    assert cpu_heap._glibc() is not None
    assert cpu_heap.configure_cpu_heap("keep")[0]
