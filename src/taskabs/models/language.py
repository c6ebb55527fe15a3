"""Character-level language model with a corpus abstraction z as an extra input (the GBI-LSTM LM).

The plain-LSTM baseline is this same network given z = (1/C, ..., 1/C) (docs/experiments/language.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class CharModelConfig:
    vocab_size: int  # V characters (id 0 = unknown); id V is the start token
    n_tasks: int  # C corpora, size of z
    embedding: int = 32
    hidden: int = 128


class CorpusConditionedCharLSTM(nn.Module):
    """Predicts character t from characters < t and z; position 0 sees a start token."""

    def __init__(self, config: CharModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size + 1, config.embedding)
        self.lstm = nn.LSTM(config.embedding + config.n_tasks, config.hidden, batch_first=True)
        self.readout = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, ids: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids: (B, T) int, z: (B, C) or (B, T, C).  Returns (logits (B, T, V), h (B, T, H))."""
        if z.dim() == 2:
            z = z[:, None, :].expand(-1, ids.shape[1], -1)  # (B, T, C)
        start = torch.full_like(ids[:, :1], self.config.vocab_size)
        previous = torch.cat([start, ids[:, :-1]], dim=1)  # (B, T)
        h, _ = self.lstm(torch.cat([self.embed(previous), z], dim=-1))  # (B, T, H)
        return self.readout(h), h

    def loss_per_example(self, ids: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy per window, in nats per character: (B,)."""
        logits, _ = self(ids, z)
        return F.cross_entropy(logits.transpose(1, 2), ids.long(), reduction="none").mean(dim=1)
