"""MeLON (Kim et al., AAAI 2022) and its ablations MeLON-I and MeLON-P: a learning rate for every (interaction,
parameter) pair. docs/melon.md gives the equations, the variants and every deviation.

Owns, from the top down: ``strategy`` (the strategy, its three steps per batch and its update algebra),
``parts`` (the meta-model φ: graph attention for h_x, the role network, the dense step), ``grads`` (per-sample
gradients and the row/column layout of touched parameters), ``fused`` and ``fused_kernels`` (the dense step's
role network as two Triton kernels, imported only when launched), ``capture`` (the learning-rate matrix W of an
update) and ``config`` (the settings).
"""

from melonbench.strategies.melon.config import MelonConfig
from melonbench.strategies.melon.strategy import Melon, MelonI, MelonP

__all__ = ["Melon", "MelonConfig", "MelonI", "MelonP"]
