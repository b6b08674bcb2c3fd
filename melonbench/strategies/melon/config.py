"""MeLON's settings: one frozen dataclass, shared by the strategy and its meta-model (docs/melon.md)."""

from __future__ import annotations

import dataclasses

from melonbench.strategies.space import Axis

VARIANTS = ("paper-mean", "paper", "reference")
LAYOUTS = ("slots", "params")
NEIGHBOUR_SAMPLING = ("recent", "sample")


@dataclasses.dataclass(frozen=True)
class MelonConfig:
    # "paper-mean" (the paper's networks, a parameter's steps averaged over the interactions that touch it: the
    # default, stable on real data), "paper" (Eq. 5 as written: steps summed; diverges on Grocery) or "reference"
    # (the released code); docs/melon.md, "The variants" and "Stability on real data"
    variant: str = "paper-mean"
    meta_lr: float = 1e-3  # paper, Algorithm 1 (Adam)
    meta_epochs: int = 10  # passes over the pre-training part, each from the checkpoint; paper: 100 (docs/melon.md)
    hidden: int = 32  # size of h_x; paper silent (reference code: 20, used by variant=reference)
    role_hidden: int = 16  # size of h_{x,m}; paper silent (reference code: 20, used by variant=reference)
    neighbours: int = 10  # neighbours per side, paper Sec. 4.1 ("up to 10")
    neighbour_sampling: str = "recent"  # "recent": the most recent ones; "sample": uniform, seeded (the paper's)
    lr_bias_low: float = -5.0  # learning-rate gate bias ~ U(low, high): reference code
    lr_bias_high: float = -4.0
    forget_bias_low: float = 4.0  # forget gate bias ~ U(low, high): reference code
    forget_bias_high: float = 6.0
    chunk: int = 0  # (interaction, dense weight) pairs per chunk, bounds memory; 0 = 2^15 on CPU, 2^20 on GPU
    capture_layout: str = "slots"  # learning-rate capture columns: "slots" or "params" (docs/melon.md)
    capture_dense: int = 4096  # at most this many dense-weight columns in a capture (evenly spaced)
    cuda_graphs: bool = True  # on CUDA, replay each batch's steps as a CUDA graph (docs/melon.md; no effect on CPU)
    graph_bucket: int = 0  # with cuda_graphs: B^last padded to a multiple of this (0: to 2|B_t|, one graph)
    fused_role: bool = True  # on CUDA with Triton, the role network over dense pairs in two kernels (docs/melon.md)

    @property
    def networks(self) -> str:
        """The meta-model's networks: the paper's (``paper``, ``paper-mean``) or the released code's."""
        return "reference" if self.variant == "reference" else "paper"

    @property
    def averaged(self) -> bool:
        """Whether a parameter's steps are averaged over the interactions that touch it (else summed, Eq. 5)."""
        return self.variant != "paper"


SPACE = (Axis("meta_lr", (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)),)
"""What ``melonbench tune`` searches for MeLON and its ablations: the meta-model's Adam rate (the learning rates
of the recommender are MeLON's output, not a setting)."""
