"""The FISOR-style baseline's DDPM: its noise schedule and its reverse chain, once.

Training (`fisor.FISOR`, torch) and the deployed decision (`runtime.Runtime`, numpy over the
exported denoiser graph) must run the same chain, or the bundle would deploy a different
policy from the one that was trained and evaluated. Both call `reverse_chain` here, each with
its own arrays: torch tensors in training, numpy arrays at run time. The chain only uses
operations both array types share, and each caller passes its own `sqrt`, so each keeps its
arithmetic (float32 throughout). This module imports no torch, so the deployed node loads a
FISOR-style bundle without it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["reverse_chain", "vp_schedule"]


def vp_schedule(steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> np.ndarray:
    """Variance-preserving betas for a short chain (the schedule IDQL/FISOR use for T=5)."""
    t = np.arange(1, steps + 1)
    alpha = np.exp(-beta_min / steps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / steps ** 2)
    return 1.0 - alpha


def reverse_chain(denoise: Callable[[Any, float], Any], noise: Callable[[int], Any], betas: Any,
                  alpha_bars: Any, sqrt: Callable[[Any], Any]) -> Any:
    """The reverse DDPM chain x_T → x_0, every step clipped to the action box [-1, 1].

    `denoise(x, t)` is ε_θ at the step's time t = k / T (the state is the caller's), and
    `noise(i)` the i-th Gaussian draw: x_T for i = 0, then one per step but the last. It is
    called in that order, so a caller that draws from a generator as it goes gets the same
    draws as one that passes them all at once.
    """
    steps = len(betas)
    x = noise(0)
    for i, k in enumerate(reversed(range(steps))):
        beta, ab = betas[k], alpha_bars[k]
        x = (x - beta / sqrt(1 - ab) * denoise(x, k / steps)) / sqrt(1 - beta)
        if k > 0:
            x = x + sqrt(beta) * noise(i + 1)
        x = x.clip(-1.0, 1.0)
    return x
