"""Gradient-based inference (GBI) of the task abstraction z, for any model (docs/science.md §1).

Every function takes ``loss_fn(z) -> (B,)``: per-example losses of a frozen network given a batch of
task abstractions z of shape (B, C).  Because example b's loss depends only on z[b], one backward
pass of the summed loss yields every example's gradient at once: inference over a whole batch
costs one forward and one backward pass, whatever C is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

LossFn = Callable[[torch.Tensor], torch.Tensor]


def uniform_z(batch: int, n_tasks: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """The maximum-entropy abstraction z0 = (1/C, ..., 1/C): (B, C)."""
    return torch.full((batch, n_tasks), 1.0 / n_tasks, device=device, dtype=dtype)


def one_step(loss_fn: LossFn, batch: int, n_tasks: int, *, device=None) -> torch.Tensor:
    """g = dL_b/dz_b at z0, shape (B, C).  Prediction: argmin_c g[b, c]; -g acts as a log-likelihood."""
    z = uniform_z(batch, n_tasks, device=device).requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(z).sum(), z)
    return g


def exhaustive(loss_fn: LossFn, batch: int, n_tasks: int, *, device=None) -> torch.Tensor:
    """Loss of every one-hot z: (B, C), C forward passes.  argmin is the maximum-likelihood task."""
    losses = []
    with torch.no_grad():
        for c in range(n_tasks):
            z = torch.zeros(batch, n_tasks, device=device)
            z[:, c] = 1.0
            losses.append(loss_fn(z))
    return torch.stack(losses, dim=1)


@dataclass
class IterativeResult:
    z: torch.Tensor  # (B, C) final abstraction
    loss_trace: torch.Tensor  # (steps + 1, B) per-example loss before each step and at the end


def iterative(
    loss_fn: LossFn,
    batch: int,
    n_tasks: int,
    *,
    steps: int,
    lr: float,
    simplex: bool = True,
    uniform_pull: float = 0.0,
    device=None,
) -> IterativeResult:
    """Optimise z with Adam for ``steps`` steps from z0, weights frozen.

    ``simplex=True`` (task inference): z = softmax(logits), logits from 0, prediction argmax z.
    ``simplex=False`` (recomposition): z is free in R^C from z0, so novel tasks can be expressed as
    combinations, including extrapolations, of the known abstractions.
    ``uniform_pull`` adds uniform_pull * ||theta||^2 per example (theta = logits, or z - z0), pulling
    towards the maximum-entropy point.  Adam is elementwise, so examples do not interact.
    """
    if steps < 0 or lr <= 0:
        raise ValueError(f"need steps >= 0 and lr > 0, got steps={steps}, lr={lr}")
    z0 = uniform_z(batch, n_tasks, device=device)
    theta = torch.zeros_like(z0, requires_grad=True)
    to_z = (lambda p: torch.softmax(p, dim=-1)) if simplex else (lambda p: z0 + p)
    optimiser = torch.optim.Adam([theta], lr=lr)
    trace = []
    for _ in range(steps):
        losses = loss_fn(to_z(theta))
        trace.append(losses.detach())
        objective = losses.sum() + uniform_pull * (theta**2).sum()
        optimiser.zero_grad(set_to_none=True)
        objective.backward()
        optimiser.step()
    with torch.no_grad():
        z = to_z(theta)
        trace.append(loss_fn(z))
    return IterativeResult(z=z.detach(), loss_trace=torch.stack(trace))
