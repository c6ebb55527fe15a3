"""Abstraction vs the number of tasks P, Johnston & Fusi's protocol (docs/science.md §4).

D latents, either binary (all 2**D conditions, ``n_per_condition`` samples each) or continuous
y ~ N(0, I_D) (``n_samples``), reach an MLP through a non-abstract input:

* binary: x = ReLU(A φ(y) + b) + ε, φ(y) the latents and all their products (``parity_features``:
  every condition an independent random pattern);
* continuous: random Fourier features x = √2 cos(Ω y + β) + ε, Ω ~ N(0, ``input_frequency``²),
  β ~ U(0, 2π) (high-dimensional and nonlinear, standing in for the authors' input network trained
  for a high participation ratio).

The network is trained full-batch on P random tasks sign(w_p·y + c_p), w_p unit-norm (uniform on
the sphere), c_p ~ N(0, ``offset_std``²), with sigmoid outputs and binary cross-entropy
(``task_loss(kind="bce")``). The last hidden layer, the input and the untrained network are scored
by classifier and regression generalisation across a random half-space split of latent space
(``taskabs.geometry.generalisation``; for binary latents the classifier score is CCGP with a
half-space split) against a shuffled null and, as an exploratory reference, by the PS over the
sign-orthant conditions of y, beside the PS of the targets themselves.
``latent_copies`` counts tasks that coincide with a latent (binary: the same ±y_k pattern over the
conditions; continuous: |w_p·e_k| >= ``COPY_COSINE``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from taskabs.experiments.geometry.network import ACTIVATIONS, MLP, fit, parity_features, task_loss
from taskabs.geometry import all_conditions, condition_means, parallelism_score
from taskabs.geometry.generalisation import halfspace_generalisation

__all__ = ["LATENTS", "COPY_COSINE", "MultitaskSpec", "make_tasks", "latent_copies", "train_multitask"]

LATENTS = ("binary", "continuous")
COPY_COSINE = 0.95
LAYERS = ("input", "untrained", "trained")


@dataclass(frozen=True)
class MultitaskSpec:
    """One network of the Johnston & Fusi arm; plain values so it can live in a config."""

    latents: str = "binary"  # 'binary' | 'continuous'
    d: int = 5
    n_tasks: int = 8
    offset_std: float = 0.4
    activation: str = "relu"
    depth: int = 1
    width: int = 100
    weight_decay: float = 0.01
    decay_warmup: float = 0.5
    steps: int = 1000
    lr: float = 1e-2
    lr_cooldown: float = 0.25
    init_scale: float = 0.5
    seed: int = 0
    input_dim: int = 100
    input_frequency: float = 1.0  # continuous latents: std of the Fourier frequencies Ω
    input_noise: float = 0.2
    n_per_condition: int = 8  # binary latents
    n_samples: int = 1024  # continuous latents, for training and (fresh draws) evaluation
    n_splits: int = 10  # random half-space splits per metric
    n_null: int = 1  # shuffled-null draws per layer

    def __post_init__(self) -> None:
        if self.latents not in LATENTS:
            raise ValueError(f"unknown latents {self.latents!r}; expected one of {list(LATENTS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; expected one of {sorted(ACTIVATIONS)}")
        for name in ("d", "depth", "width", "steps", "input_dim", "n_tasks", "n_splits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d < 2:
            raise ValueError(f"d must be >= 2 for a half-space split, got {self.d}")

    @property
    def n_outputs(self) -> int:
        return self.n_tasks


def make_tasks(spec: MultitaskSpec, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm task normals W (P, d) and offsets c (P,) ~ N(0, offset_std²)."""
    w = torch.randn(spec.n_tasks, spec.d, generator=generator)
    w = w / w.norm(dim=1, keepdim=True)
    return w, spec.offset_std * torch.randn(spec.n_tasks, generator=generator)


def latent_copies(spec: MultitaskSpec, w: torch.Tensor, c: torch.Tensor) -> int:
    """How many of the P tasks coincide with a latent (see the module docstring)."""
    if spec.latents == "continuous":
        return int((w.abs().max(dim=1).values >= COPY_COSINE).sum())
    y = torch.as_tensor(all_conditions(spec.d), dtype=torch.float32)  # (C, d)
    patterns = torch.where(y @ w.T + c >= 0, 1.0, -1.0)  # (C, P)
    same = (patterns[:, :, None] == y[:, None, :]).all(0) | (patterns[:, :, None] == -y[:, None, :]).all(0)
    return int(same.any(dim=1).sum())


def _latents(spec: MultitaskSpec, generator: torch.Generator) -> torch.Tensor:
    if spec.latents == "continuous":
        return torch.randn(spec.n_samples, spec.d, generator=generator)
    y = torch.as_tensor(all_conditions(spec.d), dtype=torch.float32)
    return y.repeat_interleave(spec.n_per_condition, 0)


def _embedding(spec: MultitaskSpec, generator: torch.Generator):
    if spec.latents == "continuous":
        omega = spec.input_frequency * torch.randn(spec.input_dim, spec.d, generator=generator)
        phase = 2 * math.pi * torch.rand(spec.input_dim, generator=generator)
        return lambda y: math.sqrt(2.0) * torch.cos(y @ omega.T + phase)
    a = torch.randn(spec.input_dim, 2**spec.d - 1, generator=generator)
    b = torch.randn(spec.input_dim, generator=generator)
    return lambda y: torch.relu(parity_features(y, mixing=1.0) @ a.T + b)


def _measure(h: np.ndarray, y: np.ndarray, spec: MultitaskSpec, rng: np.random.Generator) -> dict:
    row = halfspace_generalisation(h, y, n_splits=spec.n_splits, rng=rng)
    nulls = [
        halfspace_generalisation(h, y[rng.permutation(len(y))], n_splits=spec.n_splits, rng=rng)
        for _ in range(spec.n_null)
    ]
    signs = np.where(y > 0, 1, -1)
    row = {
        "classifier_gen": row["classifier"],
        "regression_gen": row["regression"],
        "classifier_gen_null_shuffle": float(np.mean([n["classifier"] for n in nulls]))
        if nulls
        else math.nan,
        "regression_gen_null_shuffle": float(np.mean([n["regression"] for n in nulls]))
        if nulls
        else math.nan,
        "ps": parallelism_score(condition_means(h, signs)),
    }
    return row


def train_multitask(spec: MultitaskSpec, *, device: str | torch.device = "cpu") -> list[dict]:
    """Train one network; rows for layers input, untrained, trained (each carrying every field of
    ``spec``): classifier_gen, regression_gen, their ``_null_shuffle`` means, ps, target_ps,
    latent_copies, train_loss, train_accuracy (trained layer: on the training set)."""
    gen = torch.Generator().manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    embed = _embedding(spec, gen)
    w, c = make_tasks(spec, generator=gen)
    y_train, y_eval = _latents(spec, gen), _latents(spec, gen)

    def inputs(y):
        clean = embed(y)
        return clean + spec.input_noise * torch.randn(clean.shape, generator=gen)

    x_train, x_eval = inputs(y_train).to(device), inputs(y_eval).to(device)
    targets = torch.where(y_train @ w.T + c >= 0, 1.0, -1.0).to(device)  # (N, P)
    model = MLP(spec, generator=gen).to(device)
    y_np = y_eval.numpy().astype(np.float64)
    eval_targets = torch.where(y_eval @ w.T + c >= 0, 1.0, -1.0)
    shared = {
        "target_ps": parallelism_score(condition_means(eval_targets.numpy(), np.where(y_np > 0, 1, -1))),
        "latent_copies": latent_copies(spec, w, c),
    }

    def hidden() -> np.ndarray:
        with torch.no_grad():
            return model(x_eval)[1].cpu().double().numpy()

    rows = [{"layer": "input"} | _measure(x_eval.cpu().double().numpy(), y_np, spec, rng)]
    rows.append({"layer": "untrained"} | _measure(hidden(), y_np, spec, rng))
    train_loss = fit(model, x_train, targets, spec, loss="bce", d=spec.d)
    with torch.no_grad():
        out = model(x_train)[0]
        value, _ = task_loss(out, targets, kind="bce", d=spec.d)
        accuracy = float((torch.where(out >= 0, 1.0, -1.0) == targets).float().mean())
    rows.append(
        {"layer": "trained"}
        | _measure(hidden(), y_np, spec, rng)
        | {"train_loss": train_loss, "train_accuracy": accuracy}
    )
    fields = asdict(spec) | {"task": "multitask"} | shared
    return [row | fields for row in rows]
