"""Rich progress display for long commands (pre-training epochs, replayed batches)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from melonbench.pipeline.experiment import RunHooks


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

    def start(self, total: int, done: int) -> None:
        self.replay_task = self.progress.add_task(self.label, total=total, completed=done, info="")

    def advance(self, done: int, running_hr5: float) -> None:
        task = self.progress.tasks[self.replay_task]
        speed = task.speed or 0.0
        self.progress.update(self.replay_task, completed=done, info=f"{speed:.1f} batch/s  HR@5 {running_hr5:.4f}")
