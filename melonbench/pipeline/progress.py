"""Rich progress display for long commands (pre-training epochs, replayed batches, tuning trials)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from melonbench.pipeline.experiment import RunHooks
from melonbench.pipeline.tasks import Task
from melonbench.pipeline.tune import Trial, TuneHooks
from melonbench.strategies.space import describe


class RichHooks(RunHooks):
    """Shows pre-training epochs and replay batches (batches/s, running sampled HR@5) on ``console``."""

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

    def advance(self, done: int, running_hr5: float) -> None:
        task = self.progress.tasks[self.replay_task]
        speed = task.speed or 0.0
        self.progress.update(self.replay_task, completed=done, info=f"{speed:.1f} batch/s  HR@5 {running_hr5:.4f}")


class RichTuneHooks(TuneHooks):
    """A tuning on ``console``: one bar of trials (done/total, best so far) over the current task's bars, and one
    line per finished trial."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
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
        hooks = _TaskHooks(self.progress, f"seed {task.config.seed}" + (f", {settings}" if settings else ""))
        try:
            yield hooks
        finally:
            for task_id in hooks.tasks:
                self.progress.remove_task(task_id)


class _TaskHooks(RunHooks):
    def __init__(self, progress: Progress, label: str) -> None:
        self.progress, self.label, self.tasks = progress, label, []
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
        self.progress.update(self._bar(f"validation replay ({self.label})", total), completed=done)

    def advance(self, done: int, running_hr5: float) -> None:
        self.progress.update(self.bars[f"validation replay ({self.label})"], completed=done)
