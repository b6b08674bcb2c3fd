"""A store that cannot be written is one clear line from `run`, `pretrain` and `prepare`, before any work."""

from __future__ import annotations

import os
import stat

import pytest
from typer.testing import CliRunner

from melonbench import cli
from melonbench.cli import app
from melonbench.core.errors import StoreError
from melonbench.pipeline import experiment
from melonbench.store import paths

runner = CliRunner()
COMMANDS = {
    "run": ["run", "--epochs", "1"],
    "pretrain": ["pretrain", "--epochs", "1"],
    "prepare": ["prepare", "synthetic", "--set", "users=50"],
}


@pytest.fixture
def no_work(monkeypatch):
    """Records any pre-training or dataset preparation (neither may start)."""
    calls = []
    monkeypatch.setattr(experiment, "load_or_pretrain", lambda *a, **k: calls.append("pretrain"))
    monkeypatch.setattr(experiment, "prepare_dataset", lambda *a, **k: calls.append("prepare"))
    return calls


@pytest.fixture
def read_only_home(melonbench_home, monkeypatch):
    """The per-test store made read-only; as root, whom permission bits do not stop, its write check fails as a
    read-only folder's would (the real ``tempfile.mkstemp`` is refused with EACCES)."""
    melonbench_home.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.geteuid() == 0:

        def refused(folder):
            raise PermissionError(13, "Permission denied", str(folder))

        monkeypatch.setattr(paths, "_probe", refused)
    yield melonbench_home
    melonbench_home.chmod(stat.S_IRWXU)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_read_only_store_is_one_line_before_any_work(command, read_only_home, no_work):
    result = runner.invoke(app, COMMANDS[command])
    assert isinstance(result.exception, StoreError), result.output
    assert str(result.exception) == (
        f"MELONBENCH_HOME {read_only_home} cannot be written (permission denied): "
        "set MELONBENCH_HOME to a writable folder"
    )
    assert no_work == [] and list(read_only_home.iterdir()) == []


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_store_that_is_a_file_is_one_line_before_any_work(command, tmp_path, monkeypatch, no_work):
    afile = tmp_path / "store"
    afile.write_text("not a folder")
    monkeypatch.setenv("MELONBENCH_HOME", str(afile))
    result = runner.invoke(app, COMMANDS[command])
    assert isinstance(result.exception, StoreError), result.output
    assert str(result.exception) == (
        f"MELONBENCH_HOME {afile} is a file, not a folder: set MELONBENCH_HOME to a writable folder"
    )
    monkeypatch.setenv("MELONBENCH_HOME", str(afile / "below"))
    result = runner.invoke(app, COMMANDS[command])
    assert str(result.exception) == (
        f"MELONBENCH_HOME {afile / 'below'} lies under {afile}, a file, not a folder: "
        "set MELONBENCH_HOME to a writable folder"
    )
    assert no_work == [] and afile.read_text() == "not a folder"


def test_a_result_folder_that_cannot_be_written_is_one_line_before_any_work(tmp_path, no_work, melonbench_home):
    afile = tmp_path / "results"
    afile.write_text("x")
    result = runner.invoke(app, [*COMMANDS["run"], "--results", str(afile)])
    assert isinstance(result.exception, StoreError)
    assert str(result.exception) == (
        f"the result folder {afile} is a file, not a folder: choose a writable folder with --results"
    )
    assert no_work == []


def test_main_prints_the_store_error_as_one_red_line(tmp_path, monkeypatch, capsys):
    afile = tmp_path / "store"
    afile.write_text("")
    monkeypatch.setenv("MELONBENCH_HOME", str(afile))
    monkeypatch.setattr("sys.argv", ["melonbench", "pretrain"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().startswith("error: MELONBENCH_HOME") and err.strip().count("\n") == 0
