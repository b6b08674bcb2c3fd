"""Stopwatch on the CPU with sleeps; the CUDA synchronisation points checked with a stand-in."""

from __future__ import annotations

import time

import pytest
import torch

from melonbench.online.timing import Stopwatch, peak_memory_bytes, reset_peak_memory


def test_sections_accumulate_and_pop_resets() -> None:
    sw = Stopwatch("cpu")
    with sw.section("eval"):
        time.sleep(0.03)
    with sw.section("update"):
        time.sleep(0.01)
    with sw.section("eval"):
        time.sleep(0.03)
    seconds = sw.pop()
    assert set(seconds) == {"eval", "update"}
    # slept 0.06 s and 0.01 s; sleeping never returns early, and the slack allows a busy shared machine
    assert 0.06 <= seconds["eval"] < 0.06 + 0.5
    assert 0.01 <= seconds["update"] < 0.01 + 0.5
    assert sw.pop() == {}


def test_a_failing_section_still_counts_and_raises() -> None:
    sw = Stopwatch(torch.device("cpu"))
    with pytest.raises(RuntimeError, match="boom"), sw.section("update"):
        time.sleep(0.01)
        raise RuntimeError("boom")
    assert sw.pop()["update"] >= 0.01


def test_cuda_sections_synchronise_before_start_and_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append(f"sync {device}"))
    sw = Stopwatch("cuda:0")
    with sw.section("eval"):
        events.append("work")
    assert events == ["sync cuda:0", "work", "sync cuda:0"]
    events.clear()
    with Stopwatch("cpu").section("eval"):
        events.append("work")
    assert events == ["work"]


def test_peak_memory_is_none_off_cuda() -> None:
    assert peak_memory_bytes("cpu") is None
    reset_peak_memory("cpu")  # no effect, no error
    assert peak_memory_bytes(torch.device("cpu")) is None


def test_peak_memory_reads_cuda_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 1234)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append(str(device)))
    assert peak_memory_bytes("cuda") == 1234
    reset_peak_memory("cuda:1")
    assert calls == ["cuda:1"]
