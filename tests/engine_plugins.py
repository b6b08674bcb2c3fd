"""Strategies that fail on purpose, registered in worker processes and Ray workers through ``Engine.setup``
(``engine_plugins:register``), which import melonbench afresh and know only its registry."""

from __future__ import annotations

import os
import signal

from melonbench import strategies
from melonbench.strategies.default import Default

BROKEN_AT = 5  # the tiny stream of tests/test_engines.py has 12 online batches (0-11)


class Diverge(Default):
    """Default, except that for seed 0 the loss of online batch ``BROKEN_AT`` is NaN (a real DivergenceError)."""

    name = "diverge"
    label = "Diverge"

    def online_step(self, batch, history):
        losses = super().online_step(batch, history)
        return losses * float("nan") if self.seed == 0 and batch.index == BROKEN_AT else losses


class Die(Default):
    """For seed 0, kills its own process at online batch 2, as the kernel's OOM killer would."""

    name = "die"
    label = "Die"

    def online_step(self, batch, history):
        if self.seed == 0 and batch.index == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().online_step(batch, history)


class CtrlC(Default):
    """For seed 0, presses Ctrl-C in the driver (the worker's parent) at online batch 2, then goes on slowly."""

    name = "ctrl-c"
    label = "CtrlC"

    def online_step(self, batch, history):
        if self.seed == 0 and batch.index == 2:
            os.kill(os.getppid(), signal.SIGINT)
        return super().online_step(batch, history)


PLUGINS = (Diverge, Die, CtrlC)


def register() -> None:
    """Add the strategies above to the registry of this process."""
    for cls in PLUGINS:
        strategies.STRATEGIES[cls.name] = cls
