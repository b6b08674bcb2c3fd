"""Replaying a strategy's step as a captured CUDA graph.

On a GPU a meta step of a few hundred small operations costs about one kernel launch (and its Python dispatch)
each, whatever the work: MeLON-BPR took 16 ms per batch on an H200 where its arithmetic needs well under one.
A CUDA graph records the step's kernels once and relaunches them all with one call. That needs a step of
fixed shapes, with no host synchronisation, no random draws and no host-side branch on device data:
:class:`GraphedStep` wraps such a function (tensors in, tensors out) and leaves it alone everywhere else.

Usage: ``step = GraphedStep(fn)``, then ``step(*tensors)`` each batch. On the CPU, and whenever CUDA graphs are
off, it is ``fn(*tensors)``. On CUDA, per distinct input signature (shapes and dtypes), the first ``warmup``
calls run eagerly on a side stream (PyTorch's recipe: lazy initialisations happen outside the capture), the
next one is captured (capturing runs nothing, so it is then replayed to do that call's work), and every later
call copies its inputs into the captured ones and replays. Outputs are cloned, so a caller may keep them.

``fn`` may update tensors in place (model parameters, optimiser state): a replay does the same updates to the
same memory. Optimisers stepped inside ``fn`` must be built with ``capturable=True``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch


class GraphedStep:
    """``fn(*tensors) -> tensor or tuple of tensors``, replayed as a CUDA graph on CUDA inputs.

    Parameters
    ----------
    fn : callable
        A step with fixed-shape, sync-free work on its tensor arguments (see the module docstring).
    enabled : bool
        ``False`` runs ``fn`` eagerly always.
    warmup : int
        Eager calls per input signature before the capture.

    Attributes
    ----------
    replays : int
        Calls served by a graph replay (for benchmarks and tests).
    failure : str or None
        Why capture failed, if it did; ``fn`` then runs eagerly from that call on (one warning).
    """

    def __init__(self, fn: Callable, enabled: bool = True, warmup: int = 2) -> None:
        self.fn = fn
        self.enabled = enabled
        self.warmup = warmup
        self.replays = 0
        self.failure: str | None = None
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], object]] = {}
        self._calls: Counter[tuple] = Counter()
        self._stream: torch.cuda.Stream | None = None

    def __call__(self, *inputs: torch.Tensor):
        if not (self.enabled and self.failure is None and inputs and _on_gpu(inputs[0])):
            return self.fn(*inputs)
        key = tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)
        if key not in self._graphs:
            if self._calls[key] < self.warmup:
                self._calls[key] += 1
                return self._side_stream(inputs)
            if not self._capture(key, inputs):
                return self._diagnose(inputs)
        graph, static_inputs, static_out = self._graphs[key]
        for static, value in zip(static_inputs, inputs, strict=True):
            static.copy_(value)
        graph.replay()
        self.replays += 1
        return _clone(static_out)

    def reset(self) -> None:
        """Forget the captured graphs (call when ``fn``'s persistent tensors are replaced, e.g. a loaded state)."""
        self._graphs.clear()
        self._calls.clear()

    def _side_stream(self, inputs: tuple[torch.Tensor, ...]):
        device = inputs[0].device
        if self._stream is None:
            self._stream = torch.cuda.Stream(device)
        stream = self._stream  # one side stream: its cached memory is reused from one warm-up call to the next
        stream.wait_stream(torch.cuda.current_stream(device))  # also: no earlier output's memory is reused early
        with torch.cuda.stream(stream):
            out = self.fn(*inputs)
        # the outputs were allocated on the side stream and will be read (and freed) on the current one: wait for
        # the side stream to finish, so that no later use of their memory there can overlap (a few warm-up calls)
        torch.cuda.synchronize(device)
        return out

    def _capture(self, key: tuple, inputs: tuple[torch.Tensor, ...]) -> bool:
        static_inputs = tuple(t.clone() for t in inputs)
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(inputs[0].device)
        try:
            with torch.cuda.graph(graph):
                static_out = self.fn(*static_inputs)
        except Exception as error:  # a kernel that cannot be captured: stay correct, run eagerly from now on
            self.failure = f"{type(error).__name__}: {error}".splitlines()[0]
            warnings.warn(f"CUDA graph capture failed, running eagerly: {self.failure}", RuntimeWarning, stacklevel=3)
            torch.cuda.synchronize(inputs[0].device)
            return False
        self._graphs[key] = (graph, static_inputs, static_out)
        return True

    def _diagnose(self, inputs: tuple[torch.Tensor, ...]):
        """The eager call after a failed capture, with PyTorch's synchronisation debug mode on "warn": the lines of
        ``fn`` that synchronised with the host (the usual reason a capture fails) are added to ``failure``."""
        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                out = self.fn(*inputs)
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        for w in caught:  # the other warnings, as they would have been shown
            if w not in syncs:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if syncs:
            where = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in syncs})
            self.failure = f"{self.failure}; host synchronisations at {', '.join(where)}"
        return out


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, *steps: GraphedStep) -> None:
    """``optimizer.load_state_dict(state)``, keeping its ``capturable`` setting (a state saved without CUDA graphs
    says False) and dropping the graphs of ``steps`` (the optimiser's state tensors are new ones)."""
    capturable = [group.get("capturable", False) for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flag in zip(optimizer.param_groups, capturable, strict=True):
        group["capturable"] = flag
    for step in steps:
        step.reset()


def graphed_steps(strategy: object) -> list[GraphedStep]:
    """The :class:`GraphedStep` attributes of ``strategy`` (for benchmarks: replays, failures)."""
    return [v for v in vars(strategy).values() if isinstance(v, GraphedStep)]


def graph_report(strategy: object) -> tuple[int, str | None]:
    """How many calls a graph replay served across ``strategy``'s steps, and why capture failed (None: it did not)."""
    steps = graphed_steps(strategy)
    return sum(g.replays for g in steps), "; ".join(g.failure for g in steps if g.failure) or None


def _on_gpu(t: torch.Tensor) -> bool:
    return t.is_cuda


def _clone(out):
    if isinstance(out, torch.Tensor):
        return out.clone()
    return tuple(t.clone() for t in out)
