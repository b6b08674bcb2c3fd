"""Bad input to `melonbench run`: one clear line, before any work, and nothing lost."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from melonbench import strategies
from melonbench.core.config import PretrainConfig, RunConfig
from melonbench.core.errors import (
    CheckpointError,
    DivergenceError,
    IncompatibleError,
    MelonbenchError,
    NotPreparedError,
)
from melonbench.pipeline.experiment import run_experiment
from melonbench.store.paths import checkpoints_dir
from melonbench.strategies.default import Default

PRETRAIN = PretrainConfig(epochs=1)
runner = CliRunner()


class BprOnly(Default):
    name = "bpronly"
    label = "BPR only"
    supports = frozenset({"bpr"})
    incompatibility = "it transforms embeddings only"


class Explode(Default):
    """Diverges at its third online batch."""

    name = "explode"
    label = "Explode"

    def online_step(self, batch, history):
        losses = super().online_step(batch, history)
        if batch.index == 2:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(float("nan"))
        return losses


def test_unprepared_dataset_names_the_prepare_command():
    with pytest.raises(NotPreparedError, match="melonbench prepare movielens"):
        run_experiment(RunConfig(dataset="movielens"))


def test_incompatible_pair_is_refused_before_any_work(monkeypatch):
    monkeypatch.setitem(strategies.STRATEGIES, "bpronly", BprOnly)
    # The dataset is not prepared either: the compatibility check must come first.
    with pytest.raises(IncompatibleError, match="does not support model 'ncf'.*transforms embeddings only"):
        run_experiment(RunConfig(dataset="nowhere", model="ncf", strategy="bpronly"))


def test_cli_prints_one_red_line_and_exits_2(monkeypatch):
    from melonbench import cli

    monkeypatch.setattr("sys.argv", ["melonbench", "run", "--strategy", "melom"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(MelonbenchError, match="no CUDA GPU is available"):
        run_experiment(RunConfig(device="cuda"))


def test_corrupted_checkpoint_is_refused(in_grocery, tmp_path):
    config = RunConfig(dataset="grocery", split="validation", pretrain=PretrainConfig(epochs=1, lr=2e-3))
    first = run_experiment(config, tmp_path / "a")
    ckpt = checkpoints_dir() / f"bpr-{first.manifest['checkpoint']['key']}.pt"
    ckpt_bytes = ckpt.read_bytes()
    try:
        ckpt.write_bytes(ckpt_bytes[: len(ckpt_bytes) // 2])
        with pytest.raises(CheckpointError, match="corrupt"):
            run_experiment(config, tmp_path / "b")
    finally:
        ckpt.write_bytes(ckpt_bytes)


def test_non_finite_loss_stops_the_run_with_the_batch_index_and_keeps_the_checkpoint(in_grocery, monkeypatch, tmp_path):
    monkeypatch.setitem(strategies.STRATEGIES, "explode", Explode)
    config = RunConfig(dataset="grocery", strategy="explode", pretrain=PRETRAIN, checkpoint_every=2)
    with pytest.raises(DivergenceError, match="online batch 3"):
        run_experiment(config, tmp_path)
    (folder,) = tmp_path.iterdir()
    assert (folder / "state.pt").is_file() and not (folder / "batches.parquet").exists()
    import polars as pl

    assert pl.read_parquet(folder / "partial.parquet")["batch"].to_list() == [0, 1]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RunConfig(checkpoint_every=0), "--checkpoint-every must be at least 1, got 0"),
        (lambda: RunConfig(warmup=-1), "--warmup must be at least 0, got -1"),
        (lambda: PretrainConfig(epochs=0), "--epochs must be at least 1, got 0"),
        (lambda: PretrainConfig(lr=float("nan")), "--lr must be positive, got nan"),
        (lambda: RunConfig(pretrain=PretrainConfig(patience=0)), "--patience must be at least 1, got 0"),
    ],
)
def test_library_callers_get_the_cli_s_errors_when_the_config_is_made(make, message):
    with pytest.raises(MelonbenchError) as err:
        make()
    assert str(err.value).startswith(message)
