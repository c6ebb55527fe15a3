"""Recurrent next-observation predictor with a task-abstraction input z (the GBI-LSTM).

The plain-LSTM baseline is the *same* network trained with z held at the maximum-entropy point
(1/C, ..., 1/C), so it has exactly the same parameters and inputs but z carries no information.
This keeps the comparison matched in size and lets the same optimisation of z be applied to both
(the control of the GBI paper's recomposition experiments).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SequenceModelConfig:
    obs_dim: int = 1  # D
    n_tasks: int = 2  # C, size of z
    hidden: int = 64


class TaskConditionedLSTM(nn.Module):
    """Predicts x_t from x_{<t} and z_t; the first step sees a zero observation (start token)."""

    def __init__(self, config: SequenceModelConfig):
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(config.obs_dim + config.n_tasks, config.hidden, batch_first=True)
        self.readout = nn.Linear(config.hidden, config.obs_dim)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D) observations, z: (B, C) or (B, T, C).  Returns (prediction (B, T, D), h (B, T, H))."""
        if z.dim() == 2:
            z = z[:, None, :].expand(-1, x.shape[1], -1)  # (B, T, C)
        previous = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)  # (B, T, D)
        h, _ = self.lstm(torch.cat([previous, z], dim=-1))  # (B, T, H)
        return self.readout(h), h

    def loss_per_example(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Mean squared prediction error per sequence: (B,)."""
        prediction, _ = self(x, z)
        return ((prediction - x) ** 2).mean(dim=(1, 2))
