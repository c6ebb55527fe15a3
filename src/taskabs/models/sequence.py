"""Recurrent next-observation predictor with a task-abstraction input z (the GBI-LSTM).

The plain-LSTM baseline is the *same* network trained with z held at the maximum-entropy point
(1/C, ..., 1/C), so it has exactly the same parameters and inputs but z carries no information.
This keeps the comparison matched in size and lets the same optimisation of z be applied to both
(the control of the GBI paper's recomposition experiments).

Two ways for z to enter (``z_mode``, docs/experiments/sequence.md):

- ``concat`` (the GBI paper's GBI-LSTM, as in the authors' code of the time,
  ``hummosa/contextual_switching_task``): z is concatenated with the previous observation at the
  LSTM's input.
- ``gate`` (the first author's later NeuraGEM code): fixed Bernoulli(p) masks M (C x H) turn z into
  per-unit gains g = z M, which multiply the LSTM's hidden and cell state after every step. Which
  units a task may use is then built in, not learned.

Models (the ``{model}`` wildcard): ``gbi_lstm`` (true one-hot z, concat), ``lstm`` (z at maximum
entropy), ``lstm_shuffled_z`` (a one-hot z constant within each block but with the block labels
permuted across blocks: the same input statistics, no task information; the reviewers' control)
and ``gbi_lstm_gated`` (true one-hot z, gate).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from taskabs.artifacts import load_checkpoint, load_frozen
from taskabs.data.sequences import SequenceSpec

MODELS = ("gbi_lstm", "lstm")  # the compared pair (scorecard, geometry)
CONTROLS = ("lstm_shuffled_z", "gbi_lstm_gated")  # extra models of this experiment
ALL_MODELS = MODELS + CONTROLS
Z_MODES = ("concat", "gate")
GATE_PROBABILITY = 0.5  # NeuraGEM's P_gates_bernoulli_prob


@dataclass(frozen=True)
class SequenceModelConfig:
    obs_dim: int = 1  # D
    n_tasks: int = 2  # C, size of z
    hidden: int = 64
    z_mode: str = "concat"

    def __post_init__(self) -> None:
        if self.z_mode not in Z_MODES:
            raise ValueError(f"z_mode must be one of {Z_MODES}, got {self.z_mode!r}")


class TaskConditionedLSTM(nn.Module):
    """Predicts x_t from x_{<t} and z_t; the first step sees a zero observation (start token)."""

    def __init__(self, config: SequenceModelConfig):
        super().__init__()
        self.config = config
        if config.z_mode == "concat":
            self.lstm = nn.LSTM(config.obs_dim + config.n_tasks, config.hidden, batch_first=True)
        else:
            self.cell = nn.LSTMCell(config.obs_dim, config.hidden)
            mask = torch.bernoulli(torch.full((config.n_tasks, config.hidden), GATE_PROBABILITY))
            self.register_buffer("gate_mask", mask)  # fixed, saved with the weights
        self.readout = nn.Linear(config.hidden, config.obs_dim)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D) observations, z: (B, C) or (B, T, C).  Returns (prediction (B, T, D), h (B, T, H))."""
        if z.dim() == 2:
            z = z[:, None, :].expand(-1, x.shape[1], -1)  # (B, T, C)
        previous = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)  # (B, T, D)
        if self.config.z_mode == "concat":
            h, _ = self.lstm(torch.cat([previous, z], dim=-1))  # (B, T, H)
        else:
            h = self._gated(previous, z)
        return self.readout(h), h

    def _gated(self, previous: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Post-step gating: (h_t, c_t) = g_t * LSTMCell(x_{t-1}, (h_{t-1}, c_{t-1})), g_t = z_t M.

        From a zero state a pre-step gate would leave the first prediction independent of z, so the
        gate follows each step (which also gates the readout).
        """
        gains = z @ self.gate_mask  # (B, T, H)
        B, T, _ = previous.shape
        h = previous.new_zeros(B, self.config.hidden)
        c = previous.new_zeros(B, self.config.hidden)
        out = []
        for t in range(T):
            h, c = self.cell(previous[:, t], (h, c))
            h, c = h * gains[:, t], c * gains[:, t]
            out.append(h)
        return torch.stack(out, dim=1)

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


def z_mode_of(model_name: str) -> str:
    return "gate" if model_name == "gbi_lstm_gated" else "concat"


def build_model(config: dict, model_name: str = "gbi_lstm") -> TaskConditionedLSTM:
    spec = spec_from(config)
    return TaskConditionedLSTM(
        SequenceModelConfig(
            obs_dim=spec.dim,
            n_tasks=spec.n_tasks,
            hidden=config["model"]["hidden"],
            z_mode=z_mode_of(model_name),
        )
    )


def block_starts(schedule: torch.Tensor) -> torch.Tensor:
    """Block index of every trial of a schedule (T,): 0 for the first block, +1 at each switch."""
    switch = torch.zeros_like(schedule)
    switch[1:] = (schedule[1:] != schedule[:-1]).long()
    return torch.cumsum(switch, dim=0)


def shuffled_blocks(tasks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The block labels of a (S, T) shared schedule permuted across blocks: (S, T) task indices.

    The result is constant within each true block and uses the same labels, equally often, as the
    true schedule, but which block gets which label is a random permutation: no task information.
    """
    schedule = tasks[0]
    if not bool((tasks == schedule).all()):
        raise ValueError("shuffled_blocks needs one schedule shared by every stream")
    block = block_starts(schedule)
    labels = schedule[torch.nonzero(torch.diff(block, prepend=block[:1] - 1)).flatten()]  # one per block
    permuted = labels[torch.randperm(len(labels), generator=generator)]
    return permuted[block].expand_as(tasks).clone()


def task_input(
    model_name: str, tasks: torch.Tensor, n_tasks: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """z for training/evaluation.

    True one-hot for ``gbi_lstm`` and ``gbi_lstm_gated``; maximum entropy for ``lstm``; for
    ``lstm_shuffled_z`` the one-hot of the block-shuffled labels when a ``generator`` is given
    (training), else the true one-hot (evaluation: the same input the GBI-LSTM gets, which this
    model learned to carry no information).
    """
    if model_name not in ALL_MODELS:
        raise ValueError(f"unknown sequence model {model_name!r}; expected one of {ALL_MODELS}")
    if model_name == "lstm":
        return torch.full((*tasks.shape, n_tasks), 1.0 / n_tasks)
    if model_name == "lstm_shuffled_z" and generator is not None:
        tasks = shuffled_blocks(tasks, generator)
    return torch.nn.functional.one_hot(tasks, n_tasks).float()


def load_model(path: str | os.PathLike) -> tuple[TaskConditionedLSTM, dict]:
    """A trained model, frozen, and the checkpoint it came from (with its resolved config)."""
    state = load_checkpoint(path)
    model = build_model(state["config"], state.get("model_name", "gbi_lstm"))
    return load_frozen(model, state), state
