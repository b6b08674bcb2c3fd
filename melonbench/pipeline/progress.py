"""A run's progress for people and for log files: a live bar on a terminal, time-stamped lines anywhere else;
a tuning's trials (``RichTuneHooks``); a grid's runs (``grid_hooks``: a bar of runs done, or a line per run).

Both show the same numbers for a run: pre-training epochs (loss, validation HR@5), meta-model pre-training epochs,
and the replayed batches with the run mean of sampled HR@5 over the split being replayed so far
(interaction-weighted, as the summary table computes it; at the last test batch it is the table's value).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from melonbench.pipeline.experiment import RunHooks
from melonbench.pipeline.reproduce import GridHooks
from melonbench.pipeline.tasks import Task
from melonbench.pipeline.tune import Trial, TuneHooks
from melonbench.strategies.space import describe


def progress_hooks(console: Console, label: str) -> RichHooks | LogHooks:
    """The live bar when ``console`` is a terminal (or a notebook), plain lines otherwise (a file, a pipe, CI)."""
    if console.is_terminal or console.is_jupyter:
        return RichHooks(console, label)
    return LogHooks(console, label)


def grid_hooks(console: Console) -> RichGridHooks | LogGridHooks:
    """A grid's progress: the bars when ``console`` is a terminal (or a notebook), plain lines otherwise."""
    if console.is_terminal or console.is_jupyter:
        return RichGridHooks(console)
    return LogGridHooks(console)


def _hr5_text(split: str, hr5: float) -> str:
    return f"sampled HR@5 ({split} so far) {hr5:.4f}"


class RichHooks(RunHooks):
    """Shows pre-training epochs and replay batches (batches/s, the running sampled HR@5) on ``console``."""

    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.label = label
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.pretrain_task = None
        self.meta_task = None
        self.replay_task = None

    def __enter__(self) -> RichHooks:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def pretrain_epoch(self, epoch: int, loss: float, hr: float) -> None:
        if self.pretrain_task is None:
            self.pretrain_task = self.progress.add_task("pre-training", total=None, info="")
        self.progress.update(self.pretrain_task, completed=epoch, info=f"loss {loss:.4f}  val HR@5 {hr:.4f}")

    def meta_batch(self, epoch: int, done: int, total: int) -> None:
        if self.meta_task is None:
            self.meta_task = self.progress.add_task("meta-model pre-training", total=total, info="")
        self.progress.update(self.meta_task, completed=done, info=f"epoch {epoch}")

    def note(self, message: str) -> None:
        self.console.print(f"[yellow]{message}[/yellow]")

    def start(self, total: int, done: int) -> None:
        self.replay_task = self.progress.add_task(self.label, total=total, completed=done, info="")

    def advance(self, done: int, split: str, running_hr5: float) -> None:
        task = self.progress.tasks[self.replay_task]
        speed = task.speed or 0.0
        info = f"{speed:.1f} batch/s  {_hr5_text(split, running_hr5)}"
        self.progress.update(self.replay_task, completed=done, info=info)


class LogHooks(RunHooks):
    """One time-stamped line per pre-training epoch, per meta-model pre-training epoch, and every ``every`` replayed
    batches (by default about every 5% of the replay) and the last, each printed when it happens.

    Parameters
    ----------
    console : rich.console.Console
        Where the lines go (the CLI's stderr).
    label : str
        What runs, at the start of every line (``default/bpr seed 0``).
    every : int, optional
        Replayed batches between two lines (default: a twentieth of the replay, at least 1).
    clock : callable, optional
        Seconds of a monotonic clock (the elapsed time of each line; replaced in the tests).
    """

    def __init__(
        self, console: Console, label: str, every: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.console = console
        self.label = label
        self.every = every
        self.clock = clock
        self.started = clock()
        self.replay_started = self.started
        self.total = self.first = self.next = self.step = 0

    def __enter__(self) -> LogHooks:
        self.started = self.clock()
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _line(self, text: str) -> None:
        elapsed = int(self.clock() - self.started)
        stamp = f"{time.strftime('%Y-%m-%d %H:%M:%S')} +{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}"
        self.console.print(f"{stamp}  {self.label}: {text}", markup=False, highlight=False, soft_wrap=True)

    def pretrain_epoch(self, epoch: int, loss: float, hr: float) -> None:
        self._line(f"pre-training epoch {epoch}: loss {loss:.4f}, validation HR@5 {hr:.4f}")

    def meta_batch(self, epoch: int, done: int, total: int) -> None:
        if done == total:
            self._line(f"meta-model pre-training epoch {epoch} done ({total} batches)")

    def note(self, message: str) -> None:
        self._line(message)

    def start(self, total: int, done: int) -> None:
        self.total, self.first, self.replay_started = total, done, self.clock()
        self.step = self.every or max(1, total // 20)
        self.next = (done // self.step + 1) * self.step
        self._line(f"replay of {total} batches" + (f", resumed after batch {done - 1}" if done else "") + " started")

    def advance(self, done: int, split: str, running_hr5: float) -> None:
        if done < self.next and done < self.total:
            return
        self.next = (done // self.step + 1) * self.step
        seconds = self.clock() - self.replay_started
        speed = (done - self.first) / seconds if seconds > 0 else 0.0
        self._line(f"batch {done}/{self.total} ({speed:.1f} batch/s), {_hr5_text(split, running_hr5)}")


class RichTuneHooks(TuneHooks):
    """A tuning on ``console``: one bar of trials (done/total, best so far) over the current task's bars, and one
    line per finished trial."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = _counted_bars(console)
        self.trials_task = None

    def __enter__(self) -> RichTuneHooks:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, label: str, total: int) -> None:
        self.trials_task = self.progress.add_task(f"{label}: trials", total=total, info="")

    def trial(self, done: int, total: int, trial: Trial, best: Trial | None) -> None:
        scores = ", ".join("diverged" if s is None else f"{s:.4f}" for s in trial.scores)
        best_text = "none yet" if best is None else f"{best.score:.4f} ({describe(best.settings)})"
        self.progress.console.print(
            f"trial {done}/{total} {describe(trial.settings)}: validation HR@5 per seed {scores}; best {best_text}",
            highlight=False,
        )
        self.progress.update(self.trials_task, completed=done, info=f"best HR@5 {best_text}")

    @contextlib.contextmanager
    def task(self, task: Task) -> Iterator[RunHooks]:
        """Bars for one task (pre-training epochs, meta-model batches, replayed batches), removed when it ends."""
        settings = (
            describe(task.config.strategy_params) if task.kind != "pretrain" and task.config.strategy_params else ""
        )
        with _task_bars(self.progress, f"seed {task.config.seed}" + (f", {settings}" if settings else "")) as hooks:
            yield hooks


class RichGridHooks(GridHooks):
    """A grid on ``console``: one bar of runs (done/total, failures, elapsed) over the bars of the task that runs in
    this process (with one job; worker processes and Ray tasks show only in the runs bar and the lines)."""

    def __init__(self, console: Console) -> None:
        self.progress = _counted_bars(console)
        self.bar = None

    def __enter__(self) -> RichGridHooks:
        return self  # the bars appear when the grid starts: an error in its options prints alone

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, total: int) -> None:
        self.progress.start()
        self.bar = self.progress.add_task("grid: runs", total=total, info="")

    def finished(self, done: int, total: int, failed: int, elapsed_s: float) -> None:
        self.progress.update(self.bar, completed=done, info=f"{failed} failed" if failed else "")

    @contextlib.contextmanager
    def task(self, task: Task) -> Iterator[RunHooks]:
        split = task.config.split
        with _task_bars(
            self.progress, _task_label(task), f"{split} replay" if split == "validation" else "replay"
        ) as h:
            yield h


class LogGridHooks(GridHooks):
    """A grid off a terminal: the time-stamped lines of each task run in this process (``LogHooks``) and, as each
    run finishes, one line of the grid's count (done/total, failures, elapsed)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __enter__(self) -> LogGridHooks:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def finished(self, done: int, total: int, failed: int, elapsed_s: float) -> None:
        elapsed = int(elapsed_s)
        line = f"grid: {done}/{total} runs done, {failed} failed, {elapsed // 3600}:{elapsed // 60 % 60:02d}:"
        self.console.print(f"{line}{elapsed % 60:02d} elapsed", markup=False, highlight=False, soft_wrap=True)

    def task(self, task: Task) -> LogHooks:
        return LogHooks(self.console, _task_label(task))


def _counted_bars(console: Console) -> Progress:
    """Bars with a description, the count done/total, a free ``info`` field and the elapsed time."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@contextlib.contextmanager
def _task_bars(progress: Progress, label: str, replay: str = "validation replay") -> Iterator[_TaskHooks]:
    """One task's bars (pre-training epochs, meta-model batches, replayed batches), removed when it ends."""
    hooks = _TaskHooks(progress, label, replay)
    try:
        yield hooks
    finally:
        for task_id in hooks.tasks:
            progress.remove_task(task_id)


def _task_label(task: Task) -> str:
    c = task.config
    return f"{c.model} seed {c.seed}" if task.kind == "pretrain" else f"{c.strategy}/{c.model} seed {c.seed}"


class _TaskHooks(RunHooks):
    def __init__(self, progress: Progress, label: str, replay: str = "validation replay") -> None:
        self.progress, self.label, self.tasks = progress, label, []
        self.replay = f"{replay} ({label})"
        self.bars: dict[str, int] = {}

    def _bar(self, name: str, total: int | None) -> int:
        if name not in self.bars:
            self.bars[name] = self.progress.add_task(f"  {name}", total=total, info="")
            self.tasks.append(self.bars[name])
        return self.bars[name]

    def pretrain_epoch(self, epoch: int, loss: float, hr: float) -> None:
        bar = self._bar(f"pre-training ({self.label})", None)
        self.progress.update(bar, completed=epoch, info=f"loss {loss:.4f}  val HR@5 {hr:.4f}")

    def meta_batch(self, epoch: int, done: int, total: int) -> None:
        bar = self._bar(f"meta-model pre-training ({self.label})", total)
        self.progress.update(bar, completed=done, info=f"epoch {epoch}")

    def start(self, total: int, done: int) -> None:
        self.progress.update(self._bar(self.replay, total), completed=done)

    def advance(self, done: int, split: str, running_hr5: float) -> None:
        self.progress.update(self.bars[self.replay], completed=done, info=_hr5_text(split, running_hr5))

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]{message}[/yellow]")
