"""When do abstract representations emerge?  The theory's experiment as a library (SCIENCE.md §2).

Latents y ∈ {−1, +1}^d (all 2**d conditions, ``n_per_condition`` samples each) reach an MLP
through a fixed random nonlinear embedding

    x = ReLU(A φ(y) + b) + ε,   A ~ N(0, 1), b ~ N(input_bias, 1), ε ~ N(0, input_noise²),

where φ(y) holds the latents and, weighted by ``input_mixing``, all their products (see
``parity_features``).  ``input_mixing=0`` is SCIENCE.md's x = ReLU(A y + b) + noise; that input
is already fairly abstract (PS ≈ 0.6, CCGP ≈ 1: every unit is monotone in every latent), so the
default ``input_mixing=1`` gives each condition an independent random pattern instead: PS ≈ 0
and CCGP at chance, and any abstraction found later was built by training.

The MLP (``depth`` hidden layers of ``width`` units, one activation) is trained full-batch with
Adam on the task loss (MSE by default, see ``task_loss``) plus L2 weight decay on its weights
(biases are not decayed; λ ramps up over the first half, lr cools down over the last quarter),
either on

* ``task="latent"``: the latents themselves (targets y, d outputs), or
* ``task="random"``: P = ``n_tasks`` random hyperplane tasks, targets sign(w_p·y + c_p) with
  w_p ~ N(0, I_d) and a small offset c_p ~ N(0, ``task_offset_std``²) (Johnston & Fusi 2023),

and the geometry of its last hidden layer (PS, CCGP, shattering dimensionality, each against a
shuffled-condition and a random-geometry null) is compared with the input and the untrained net.

Everything is drawn from ``spec.seed`` (embedding, data, tasks and initial weights from one
``torch.Generator``; metric randomness from one ``numpy.random.Generator``): the same spec gives
identical rows.  Sizes are chosen so one network trains and is measured in about half a second
on one CPU thread.  Training uses a hand-written backward pass and a flat-buffer Adam (both
tested against torch's) because per-op overhead, not arithmetic, dominates at these sizes.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taskabs.geometry import METRICS, all_conditions, condition_means, null_distribution, parallelism_score

log = logging.getLogger(__name__)

__all__ = [
    "ACTIVATIONS",
    "NetworkSpec",
    "MLP",
    "FlatAdam",
    "task_loss",
    "backprop",
    "parity_features",
    "make_embedding",
    "make_dataset",
    "make_targets",
    "measure_layer",
    "fit",
    "train_and_measure",
    "target_geometry",
]

Activation = Callable[[torch.Tensor], torch.Tensor]
LEAKY_SLOPE = 0.01  # torch's default negative slope
ACTIVATIONS: dict[str, Activation] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "gelu": F.gelu,  # exact (erf) form
    "leaky_relu": functools.partial(F.leaky_relu, negative_slope=LEAKY_SLOPE),
    "sigmoid": torch.sigmoid,
}
_SQRT_HALF, _INV_SQRT_2PI = math.sqrt(0.5), 1.0 / math.sqrt(2.0 * math.pi)
# d act / dz from the pre-activation z and the activation h = act(z), for manual backprop.
ACTIVATION_DERIVATIVES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "relu": lambda z, h: (z > 0).to(z.dtype),
    "tanh": lambda z, h: 1.0 - h * h,
    "gelu": lambda z, h: (
        0.5 * (1.0 + torch.erf(z * _SQRT_HALF)) + z * torch.exp(-0.5 * z * z) * _INV_SQRT_2PI
    ),
    "leaky_relu": lambda z, h: torch.where(z > 0, 1.0, LEAKY_SLOPE).to(z.dtype),
    "sigmoid": lambda z, h: h * (1.0 - h),
}
TASKS = ("latent", "random")
LOSSES = ("mse", "bce")
NULLS = ("shuffle", "geometry")


@dataclass(frozen=True)
class NetworkSpec:
    """One network of the experiment; every field is a plain value so it can live in a config.

    Defaults are tuned so that latent-task networks reach last-hidden-layer PS and CCGP >= 0.9
    for every activation and depth 1-3 (d = 3) in ~0.5 s each; see tests/unit/experiments/test_abstraction.py.
    """

    d: int = 3  # binary latents (2**d conditions)
    activation: str = "relu"  # one of ACTIVATIONS
    depth: int = 1  # hidden layers
    width: int = 100  # units per hidden layer
    loss: str = "mse"  # 'mse' | 'bce' (logistic), see task_loss
    weight_decay: float = 0.05  # L2 coefficient λ on weights: objective = task loss + λ Σ‖W‖² / 2
    decay_warmup: float = 0.5  # fraction of the steps over which λ ramps up linearly from 0
    task: str = "latent"  # 'latent' | 'random'
    n_tasks: int = 8  # P random hyperplane tasks (task='random' only)
    task_offset_std: float = 0.1  # std of the hyperplane offsets c_p
    steps: int = 1000  # full-batch Adam updates
    lr: float = 1e-2
    lr_cooldown: float = 0.25  # final fraction of the steps over which lr decays linearly to 0
    init_scale: float = 0.5  # weights ~ N(0, init_scale² / fan_in), biases 0
    seed: int = 0
    input_dim: int = 100  # embedding dimension
    input_mixing: float = 1.0  # weight of the latents' products in φ(y); 0 gives ReLU(A y + b)
    input_bias: float = 0.0  # mean of the embedding bias b
    input_noise: float = 0.2  # std of ε
    n_per_condition: int = 8  # samples per condition, for training and (fresh noise) evaluation
    n_null_ps: int = 20  # draws per PS null (cheap: condition means only)
    n_null_decoding: int = 1  # draws per CCGP / shattering null (~10 ms each; average over networks)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; expected one of {sorted(ACTIVATIONS)}")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {list(TASKS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {list(LOSSES)}")
        for name in ("d", "depth", "width", "steps", "input_dim", "n_tasks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_per_condition < 2:
            raise ValueError(
                f"n_per_condition must be >= 2 (decoders need a test sample), got {self.n_per_condition}"
            )
        for name in ("decay_warmup", "lr_cooldown"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def n_outputs(self) -> int:
        return self.d if self.task == "latent" else self.n_tasks


class MLP(nn.Module):
    """x -> [Linear -> activation] * depth -> Linear readout.  Architecture only."""

    def __init__(self, spec: NetworkSpec, *, generator: torch.Generator):
        super().__init__()
        sizes = [spec.input_dim] + [spec.width] * spec.depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.readout = nn.Linear(spec.width, spec.n_outputs)
        self.activation = spec.activation
        # Seeded init from `generator`, not torch's global RNG; small scale = feature learning.
        with torch.no_grad():
            for layer in [*self.hidden, self.readout]:
                layer.weight.normal_(0.0, spec.init_scale / math.sqrt(layer.in_features), generator=generator)
                layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        act = ACTIVATIONS[self.activation]
        h = x  # (N, input_dim)
        for layer in self.hidden:
            h = act(torch.addmm(layer.bias, h, layer.weight.T))  # (N, width)
        return torch.addmm(self.readout.bias, h, self.readout.weight.T), h  # (N, P), (N, width)


def task_loss(
    output: torch.Tensor, targets: torch.Tensor, *, kind: str, d: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Task loss and its gradient with respect to the output, from (N, P) outputs and targets.

        mse:  L = Σ_{i,p} (f_ip − t_ip)² / (N d)
        bce:  L = Σ_{i,p} log(1 + exp(−t_ip f_ip)) / (N d)     (logistic loss, t ∈ {−1, +1})

    Dividing by the number of latents d rather than by P gives every output the weight one
    latent has in the latent task, so the L2 term does not grow relative to the task with P.
    """
    norm = 1.0 / (output.shape[0] * d)
    if kind == "mse":
        resid = output - targets
        return resid.square().sum() * norm, resid * (2.0 * norm)
    margin = targets * output
    return F.softplus(-margin).sum() * norm, -targets * torch.sigmoid(-margin) * norm


@torch.no_grad()
def backprop(model: MLP, x: torch.Tensor, targets: torch.Tensor, *, loss: str, d: int) -> torch.Tensor:
    """``task_loss`` of ``model(x)``; writes its gradient into every parameter's ``.grad``.

    Hand-written backprop with the forward ops of ``MLP.forward``: at these sizes the autograd
    engine's per-node overhead is a third of a training step.  Tested against autograd.
    """
    act, deriv = ACTIVATIONS[model.activation], ACTIVATION_DERIVATIVES[model.activation]
    layers = [*model.hidden, model.readout]
    for p in model.parameters():
        if p.grad is None:  # FlatAdam provides views into its buffer; otherwise allocate
            p.grad = torch.zeros_like(p)
    hs, zs = [x], []  # layer inputs (N, ·) and pre-activations (N, width)
    for layer in model.hidden:
        zs.append(torch.addmm(layer.bias, hs[-1], layer.weight.T))
        hs.append(act(zs[-1]))
    out = torch.addmm(model.readout.bias, hs[-1], model.readout.weight.T)  # (N, P)
    value, delta = task_loss(out, targets, kind=loss, d=d)  # delta: dL/d output (N, P)
    for i in range(len(layers) - 1, -1, -1):  # layer i maps hs[i] to zs[i] (or the output)
        torch.mm(delta.T, hs[i], out=layers[i].weight.grad)  # (out, in)
        torch.sum(delta, dim=0, out=layers[i].bias.grad)
        if i > 0:
            delta = (delta @ layers[i].weight).mul_(deriv(zs[i - 1], hs[i]))  # (N, width)
    return value


class FlatAdam:
    """torch.optim.Adam (same update, L2 ``weight_decay`` added to the gradient) over one flat
    buffer: parameters and gradients become views of two contiguous vectors, so a step is a
    handful of tensor ops instead of a handful per parameter (per-op overhead dominates at these
    sizes).  Gradients must be written into ``p.grad`` in place (``backprop`` or autograd's
    accumulation do); ``step`` zeroes them.

    ``step(weight_decay)`` takes the L2 coefficient of each element, (P,), so it can vary per
    parameter (biases 0) and over time (warm-up).
    """

    def __init__(self, params: Iterable[nn.Parameter], *, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.flat = torch.cat([p.detach().reshape(-1) for p in self.params])  # (P,)
        # Backward writes into these views in place (autograd accumulates, backprop uses out=).
        self.grad = torch.zeros_like(self.flat)  # (P,)
        offset = 0
        for p in self.params:
            n = p.numel()
            p.data = self.flat[offset : offset + n].view_as(p)
            p.grad = self.grad[offset : offset + n].view_as(p)
            offset += n
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.lr, self.betas, self.eps, self.t = lr, betas, eps, 0

    @torch.no_grad()
    def step(self, weight_decay: torch.Tensor | float = 0.0) -> None:
        """One Adam update from the accumulated gradient, then zero it (torch's formula)."""
        beta1, beta2 = self.betas
        self.t += 1
        grad = self.grad + weight_decay * self.flat
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(1 - beta2**self.t)).add_(self.eps)
        self.flat.addcdiv_(self.exp_avg, denom, value=-self.lr / (1 - beta1**self.t))
        self.grad.zero_()  # autograd accumulates into .grad


def parity_features(y: torch.Tensor, *, mixing: float) -> torch.Tensor:
    """φ(y): the d latents, then ``mixing`` times every product y_S = Π_{k∈S} y_k with |S| >= 2.

    (N, d) -> (N, 2**d − 1).  The parities are orthogonal over the 2**d conditions, so with
    mixing = 1 and Gaussian A, A φ(y) is an independent Gaussian pattern per condition.
    """
    d = y.shape[1]
    products = [
        y[:, list(s)].prod(dim=1) for r in range(2, d + 1) for s in itertools.combinations(range(d), r)
    ]
    return torch.cat([y, mixing * torch.stack(products, dim=1)], dim=1) if products else y


def make_embedding(spec: NetworkSpec, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed embedding weights: A (input_dim, 2**d − 1), b (input_dim,)."""
    a = torch.randn(spec.input_dim, 2**spec.d - 1, generator=generator)
    b = spec.input_bias + torch.randn(spec.input_dim, generator=generator)
    return a, b


def make_dataset(
    spec: NetworkSpec, embedding: tuple[torch.Tensor, torch.Tensor], *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """x = ReLU(A φ(y) + b) + ε (N, input_dim) and y (N, d), N = 2**d · n_per_condition,
    grouped by condition in ``all_conditions`` order."""
    a, b = embedding
    y = torch.as_tensor(all_conditions(spec.d), dtype=torch.float32).repeat_interleave(
        spec.n_per_condition, 0
    )
    clean = torch.relu(parity_features(y, mixing=spec.input_mixing) @ a.T + b)  # (N, input_dim)
    return clean + spec.input_noise * torch.randn(clean.shape, generator=generator), y


def make_targets(spec: NetworkSpec, *, generator: torch.Generator) -> torch.Tensor:
    """Target of every condition, (2**d, n_outputs) in {−1, +1}.

    'latent': y itself.  'random': sign(W y + c), W (P, d) ~ N(0, 1), c ~ N(0, task_offset_std²)
    (the offset breaks the y -> −y symmetry of tasks through the origin; sign(0) := +1).
    """
    y = torch.as_tensor(all_conditions(spec.d), dtype=torch.float32)  # (2**d, d)
    if spec.task == "latent":
        return y
    w = torch.randn(spec.n_tasks, spec.d, generator=generator)
    c = spec.task_offset_std * torch.randn(spec.n_tasks, generator=generator)
    return torch.where(y @ w.T + c >= 0, 1.0, -1.0)  # (2**d, P)


def measure_layer(
    activity: np.ndarray, labels: np.ndarray, spec: NetworkSpec, *, rng: np.random.Generator
) -> dict[str, float]:
    """Every metric of ``taskabs.geometry.METRICS`` for one layer, and its mean under each null
    (``<metric>_null_<shuffle|geometry>``; NaN when the spec asks for 0 draws)."""
    row = {name: metric(activity, labels, rng=rng) for name, metric in METRICS.items()}
    for name, metric in METRICS.items():
        n_draws = spec.n_null_ps if name == "ps" else spec.n_null_decoding
        for null in NULLS:
            draws = null_distribution(metric, activity, labels, null=null, n_draws=n_draws, rng=rng)
            row[f"{name}_null_{null}"] = float(draws.mean()) if n_draws > 0 else float("nan")
    return row


def _task_scores(output: torch.Tensor, targets: torch.Tensor, spec: NetworkSpec) -> tuple[float, float]:
    """Task loss and sign accuracy of (N, P) outputs against (N, P) targets in {−1, +1}."""
    value, _ = task_loss(output, targets, kind=spec.loss, d=spec.d)
    return float(value), float((torch.where(output >= 0, 1.0, -1.0) == targets).float().mean())


def _empty_row(step: int, layer: str) -> dict:
    nan = float("nan")
    row = {"step": step, "layer": layer} | {name: nan for name in METRICS}
    row |= {f"{name}_null_{null}": nan for name in METRICS for null in NULLS}
    return row | {"task_loss": nan, "task_accuracy": nan, "train_loss": nan}


def fit(
    model: MLP,
    x: torch.Tensor,
    targets: torch.Tensor,
    spec,
    *,
    loss: str,
    d: int,
    eval_steps: Iterable[int] = (),
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """Train ``model`` full-batch on ``task_loss``; returns the final training loss.

    ``spec`` supplies steps, lr, weight_decay, decay_warmup, lr_cooldown.  L2 on weights only;
    λ ramps up over ``decay_warmup`` of the steps, lr cools down to 0 over the last
    ``lr_cooldown``.  ``on_step(step, train_loss)`` is called at every step in ``eval_steps``.
    """
    wanted = set(eval_steps)
    opt = FlatAdam(model.parameters(), lr=spec.lr)
    # L2 on weights only; biases stay free so saturating units (sigmoid) can centre themselves.
    is_weight = torch.cat(
        [torch.full((p.numel(),), n.endswith("weight")) for n, p in model.named_parameters()]
    )
    decay = spec.weight_decay * is_weight.to(opt.flat.dtype).to(opt.flat.device)  # (P,)
    warmup = max(1.0, spec.decay_warmup * spec.steps)
    cooldown = max(1.0, spec.lr_cooldown * spec.steps)
    train_loss = float("nan")
    for step in range(spec.steps + 1):
        value = backprop(model, x, targets, loss=loss, d=d)  # fills the gradients
        if step in wanted or step == spec.steps:
            train_loss = float(value)
        if step in wanted and on_step is not None:
            on_step(step, train_loss)
        if step == spec.steps:
            break  # the last pass only evaluates: `steps` updates in total
        # λ ramps up from 0: at full strength from the start, the L2 gradient swamps the tiny
        # early gradients of deep sigmoid nets and collapses them to a constant output.
        # lr cools down to 0 at the end: Adam near a minimum of loss + L2 has loss spikes, and
        # the geometry should be measured at a settled point, not mid-spike.
        opt.lr = spec.lr * min(1.0, (spec.steps - step) / cooldown)
        opt.step(decay * min(1.0, step / warmup))
    return train_loss


def train_and_measure(
    spec: NetworkSpec,
    *,
    eval_steps: Iterable[int] = (),
    device: str | torch.device = "cpu",
    threads: int | None = 1,
) -> list[dict]:
    """Train one network and measure the geometry of its last hidden layer.

    Returns rows (dicts with the same keys, each also carrying every field of ``spec``):

    * layer 'input' (step 0), 'untrained' (step 0) and 'trained' (step = spec.steps), with
      ps, ccgp, shattering, ``<metric>_null_<shuffle|geometry>`` (null means), task_loss
      and task_accuracy (sign agreement) on the evaluation set (NaN for 'input'), train_loss;
    * one 'during_training' row per step in ``eval_steps`` (0 <= step <= spec.steps): ps,
      train_loss, task_loss, task_accuracy (decoding metrics NaN) -- PS against training time.

    Metrics use a fresh evaluation set (same embedding and conditions, new noise).

    ``threads``: torch intra-op threads while this runs, restored afterwards (``None`` leaves
    torch's setting alone).  One thread is fastest at these sizes and keeps results identical
    across machines; with two threads on a busy 2-core machine a network took 20x longer.
    """
    wanted = sorted(set(eval_steps))
    if any(not 0 <= s <= spec.steps for s in wanted):
        raise ValueError(f"eval_steps must lie in [0, {spec.steps}], got {wanted}")
    if threads is None:
        return _train_and_measure(spec, wanted, device)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train_and_measure(spec, wanted, device)
    finally:
        torch.set_num_threads(previous)


def _train_and_measure(spec: NetworkSpec, wanted: list[int], device: str | torch.device) -> list[dict]:
    gen = torch.Generator().manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    embedding = make_embedding(spec, generator=gen)
    x_train, y_train = make_dataset(spec, embedding, generator=gen)
    x_eval, _ = make_dataset(spec, embedding, generator=gen)
    per_condition = make_targets(spec, generator=gen)  # (2**d, P)
    targets = per_condition.repeat_interleave(spec.n_per_condition, 0)  # (N, P)
    model = MLP(spec, generator=gen).to(device)
    x_train, x_eval, targets = x_train.to(device), x_eval.to(device), targets.to(device)
    labels = y_train.numpy().astype(np.int64)  # (N, d): train and eval share the condition layout

    def snapshot() -> tuple[np.ndarray, float, float]:
        with torch.no_grad():
            out, h = model(x_eval)
        return h.cpu().double().numpy(), *_task_scores(out, targets, spec)

    rows = [_empty_row(0, "input") | measure_layer(x_eval.cpu().double().numpy(), labels, spec, rng=rng)]
    h, loss, acc = snapshot()
    rows.append(
        _empty_row(0, "untrained")
        | measure_layer(h, labels, spec, rng=rng)
        | {"task_loss": loss, "task_accuracy": acc}
    )

    def on_step(step: int, train_loss: float) -> None:
        h, eval_loss, eval_acc = snapshot()
        trajectory.append(
            _empty_row(step, "during_training")
            | {"ps": parallelism_score(condition_means(h, labels)), "train_loss": train_loss}
            | {"task_loss": eval_loss, "task_accuracy": eval_acc}
        )

    trajectory: list[dict] = []
    train_loss = fit(
        model, x_train, targets, spec, loss=spec.loss, d=spec.d, eval_steps=wanted, on_step=on_step
    )

    h, loss, acc = snapshot()
    rows.append(
        _empty_row(spec.steps, "trained")
        | measure_layer(h, labels, spec, rng=rng)
        | {"task_loss": loss, "task_accuracy": acc, "train_loss": train_loss}
    )
    log.debug("%s: trained PS %.3f CCGP %.3f", spec, rows[-1]["ps"], rows[-1]["ccgp"])
    fields = asdict(spec) | target_geometry(per_condition)
    return [row | fields for row in rows + trajectory]


def target_geometry(targets: torch.Tensor) -> dict[str, float]:
    """References for the trained geometry, from the (2**d, P) targets of every condition.

    target_ps: PS of the targets themselves (equal to the PS of the square root of their Gram
    matrix, an isometric image of them); latent_copies: tasks whose pattern is ±y_k for a latent k.
    """
    t = targets.double()
    d = int(round(math.log2(t.shape[0])))
    y = torch.as_tensor(all_conditions(d), dtype=t.dtype)
    same = ((t[:, :, None] == y[:, None, :]).all(0) | (t[:, :, None] == -y[:, None, :]).all(0)).any(1)
    return {"target_ps": parallelism_score(t.numpy()), "latent_copies": int(same.sum())}
