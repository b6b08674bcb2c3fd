"""The deterministic-kernels switch that makes CUDA runs repeat bit for bit (checked on an H200, see docs)."""

from __future__ import annotations

import os

import pytest
import torch

from melonbench.online.determinism import deterministic


@pytest.fixture(autouse=True)
def _restore(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_cuda_switches_deterministic_kernels_on_and_puts_the_setting_back() -> None:
    torch.use_deterministic_algorithms(False)
    with deterministic(torch.device("cuda")):  # a device object needs no GPU
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_failing_block_still_puts_the_setting_back() -> None:
    torch.use_deterministic_algorithms(True)  # the user's own strict setting, not warn-only
    with pytest.raises(ValueError), deterministic(torch.device("cuda:0")):
        raise ValueError("boom")
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()


def test_cpu_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.use_deterministic_algorithms(False)
    with deterministic(torch.device("cpu")):
        assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_a_user_cublas_setting_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with deterministic(torch.device("cuda")):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
