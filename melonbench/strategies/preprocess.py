"""Gradient/loss preprocessing of Andrychowicz et al. (NeurIPS 2016), used by MetaLSTM-style meta-models.

A scalar g becomes two features: ``(log|g| / p, sign g)`` when ``|g| ≥ e^(−p)``, else ``(−1, e^p · g)``, with
p = 10. It keeps the meta-model's inputs in a sane range whatever the magnitude of the gradient.
"""

from __future__ import annotations

import math

import torch


def prep(x: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """Preprocess every element of ``x`` into two features: returns ``x.shape + (2,)``."""
    big = x.abs() >= math.exp(-p)
    first = torch.where(big, torch.log(x.abs().clamp_min(math.exp(-p))) / p, torch.full_like(x, -1.0))
    second = torch.where(big, torch.sign(x), x * math.exp(p))
    return torch.stack([first, second], dim=-1)
