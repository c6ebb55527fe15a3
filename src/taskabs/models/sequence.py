"""Recurrent next-observation predictor with a task-abstraction input z (the GBI-LSTM).

The plain-LSTM baseline is the *same* network trained with z held at the maximum-entropy point
(1/C, ..., 1/C), so it has exactly the same parameters and inputs but z carries no information.
This keeps the comparison matched in size and lets the same optimisation of z be applied to both
(the control of the GBI paper's recomposition experiments).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from taskabs.artifacts import load_checkpoint, load_frozen
from taskabs.data.sequences import SequenceSpec

MODELS = ("gbi_lstm", "lstm")


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


def spec_from(config: dict) -> SequenceSpec:
    """The generative process of a resolved ``sequence`` config (its ``data`` section)."""
    data = config["data"]
    return SequenceSpec(
        means=tuple(tuple(map(float, m)) for m in data["means"]),
        sigma=float(data["sigma"]),
        block_min=int(data["block_min"]),
        block_max=int(data["block_max"]),
    )


def build_model(config: dict) -> TaskConditionedLSTM:
    spec = spec_from(config)
    return TaskConditionedLSTM(
        SequenceModelConfig(obs_dim=spec.dim, n_tasks=spec.n_tasks, hidden=config["model"]["hidden"])
    )


def task_input(model_name: str, tasks: torch.Tensor, n_tasks: int) -> torch.Tensor:
    """z for training/evaluation: true one-hot for the GBI-LSTM, maximum entropy for the LSTM."""
    if model_name not in MODELS:
        raise ValueError(f"unknown sequence model {model_name!r}; expected one of {MODELS}")
    if model_name == "gbi_lstm":
        return torch.nn.functional.one_hot(tasks, n_tasks).float()
    return torch.full((*tasks.shape, n_tasks), 1.0 / n_tasks)


def load_model(path: str | os.PathLike) -> tuple[TaskConditionedLSTM, dict]:
    """A trained model, frozen, and the checkpoint it came from (with its resolved config)."""
    state = load_checkpoint(path)
    return load_frozen(build_model(state["config"]), state), state
