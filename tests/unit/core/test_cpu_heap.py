"""The CPU heap setting (distill/core/cpu_heap.py): FAIRDISTILL_CPU_HEAP is checked, `auto` keeps freed blocks on a
CPU run only, `system` leaves glibc alone, and the trainer logs what it chose."""

from __future__ import annotations

import platform

import pytest

from distill.core import cpu_heap
from distill.core.errors import ConfigError

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_the_environment_variable_is_checked_and_defaults_to_auto():
    assert cpu_heap.setting_from_env({}) == "auto"
    assert cpu_heap.setting_from_env({"FAIRDISTILL_CPU_HEAP": " Keep "}) == "keep"
    assert cpu_heap.setting_from_env({"FAIRDISTILL_CPU_HEAP": "system"}) == "system"
    with pytest.raises(ConfigError) as e:
        cpu_heap.setting_from_env({"FAIRDISTILL_CPU_HEAP": "jemalloc"})
    assert "FAIRDISTILL_CPU_HEAP='jemalloc'" in str(e.value) and "auto" in str(e.value)


class _FakeLibc:
    def __init__(self, result=1):
        self.calls, self.result = [], result

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return self.result


@pytest.fixture
def fake_libc(monkeypatch):
    """A fresh process as far as cpu_heap knows, with a recording mallopt instead of glibc's."""
    monkeypatch.setattr(cpu_heap, "_applied", False)
    libc = _FakeLibc()
    monkeypatch.setattr(cpu_heap, "_glibc", lambda: (libc, ""))
    return libc


def test_a_bad_setting_is_refused_before_anything_changes(monkeypatch, fake_libc):
    monkeypatch.setenv("FAIRDISTILL_CPU_HEAP", "fast")
    with pytest.raises(ConfigError, match="keep or system"):
        cpu_heap.configure_cpu_heap(cuda=False)
    with pytest.raises(ConfigError, match="use one of auto, keep, system"):
        cpu_heap.configure_cpu_heap("fast", cuda=False)
    assert fake_libc.calls == [] and not cpu_heap._applied


def test_system_and_a_cuda_machine_leave_the_allocator_alone(fake_libc):
    kept, why = cpu_heap.configure_cpu_heap("system")
    assert (kept, fake_libc.calls) == (
        False,
        [],
    ) and why == "FAIRDISTILL_CPU_HEAP=system: the C library's defaults"
    kept, why = cpu_heap.configure_cpu_heap("auto", cuda=True)
    assert (kept, fake_libc.calls) == (False, []) and "CUDA" in why


def test_keep_sets_mmap_max_0_and_a_2_gib_trim_threshold_once(fake_libc):
    kept, why = cpu_heap.configure_cpu_heap("auto", cuda=False)
    assert kept and "M_MMAP_MAX=0" in why and "FAIRDISTILL_CPU_HEAP=system" in why
    assert fake_libc.calls == [(-4, 0), (-1, 2**31 - 1)]  # M_MMAP_MAX, M_TRIM_THRESHOLD of glibc's malloc.h
    assert cpu_heap.configure_cpu_heap("keep", cuda=True)[0]  # keep also applies where a GPU is
    assert len(fake_libc.calls) == 2  # idempotent: mallopt is called once per process
    # a later `system` or CUDA `auto` in the same process cannot undo it, and says so rather than "defaults"
    for setting, cuda in (("system", None), ("auto", True)):
        kept, why = cpu_heap.configure_cpu_heap(setting, cuda=cuda)
        assert kept and "already keeps freed blocks" in why and "defaults" not in why


def test_a_refused_mallopt_or_another_allocator_changes_nothing(monkeypatch, fake_libc):
    fake_libc.result = 0
    assert cpu_heap.configure_cpu_heap("keep") == (False, "glibc refused mallopt: its defaults")
    assert not cpu_heap._applied
    monkeypatch.setattr(
        cpu_heap, "_glibc", lambda: (None, "the C library is not glibc (Darwin): its defaults")
    )
    kept, why = cpu_heap.configure_cpu_heap("keep")
    assert not kept and "not glibc" in why


@pytest.mark.skipif(not GLIBC, reason="mallopt and LD_PRELOAD detection are glibc's")
def test_on_glibc_the_real_mallopt_is_found_unless_another_allocator_is_preloaded(monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    libc, why = cpu_heap._glibc()
    assert libc is not None and why == ""
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    libc, why = cpu_heap._glibc()
    assert libc is None and "jemalloc is preloaded" in why


def test_free_memory_is_released_only_where_freed_blocks_are_kept(monkeypatch, fake_libc):
    trims = []
    fake_libc.malloc_trim = lambda pad: trims.append(pad) or 1
    assert cpu_heap.release_free_memory() is False and trims == []  # nothing kept: nothing to release
    cpu_heap.configure_cpu_heap("keep")
    assert cpu_heap.release_free_memory() is True and trims == [0]
