"""Gated deep linear networks (GDLN; Saxe, Sodhani & Lewallen, ICML 2022): architecture only.

:class:`GatedDeepLinearNetwork` (the general gated graph), :class:`RoutingNetwork` (M encoders ->
shared layer -> M decoders, vectorised over routes) and :class:`TwoLayerReLU` (the XoR
comparison); :func:`gradient_descent_step` is full-batch gradient descent, the Euler step of the
theory's gradient flow (t = lr * step).  The model equations are in docs/library.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "GDLNConfig",
    "GatedDeepLinearNetwork",
    "RoutingConfig",
    "RoutingNetwork",
    "TwoLayerReLU",
    "gated_squared_loss",
    "gradient_descent_step",
    "cyclic_routes",
]


def gated_squared_loss(
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    output_gates: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """L = ½ (1/N) Σ_n Σ_v g_v,n ‖y_v,n − h_v,n‖² over output nodes v.

    Args:
      outputs, targets: per output node, shape (N, D_v).  output_gates: per output node, shape (N,)
        (None: every output node is on for every example).

    Returns:
      A scalar tensor. Degenerate case: N = 0 gives 0.
    """
    total = None
    for name, h in outputs.items():
        err = (targets[name] - h).pow(2).sum(dim=1)  # (N,)
        if output_gates is not None:
            err = err * output_gates[name]
        total = err if total is None else total + err
    if total is None or total.numel() == 0:
        return torch.zeros(())
    return 0.5 * total.mean()


@torch.no_grad()
def gradient_descent_step(params, lr: float) -> None:
    """Plain gradient descent W ← W − lr · ∂L/∂W on every parameter with a .grad; clears .grad."""
    for p in params:
        if p.grad is not None:
            p.sub_(lr * p.grad)
            p.grad = None


@dataclass
class GDLNConfig:
    """Graph of a gated deep linear network.

    nodes: name → width, in any order (gate columns follow this order).
    edges: name → (source node, target node); gate columns follow this order.
    inputs / outputs: names of the nodes fed with data / read by the loss.
    init_std: weights start i.i.d. N(0, init_std²) (absolute, not scaled by fan-in).
    """

    nodes: dict[str, int]
    edges: dict[str, tuple[str, str]]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    init_std: float = 1e-3

    def __post_init__(self) -> None:
        for name, (src, dst) in self.edges.items():
            if src not in self.nodes or dst not in self.nodes:
                raise ValueError(f"edge {name!r} joins unknown nodes {src!r} -> {dst!r}")
            if dst in self.inputs:
                raise ValueError(f"edge {name!r} targets input node {dst!r}")
        for v in (*self.inputs, *self.outputs):
            if v not in self.nodes:
                raise ValueError(f"unknown node {v!r}")


class GatedDeepLinearNetwork(nn.Module):
    """The general GDLN; ``weights[e]`` has shape (width of t(e), width of s(e))."""

    def __init__(
        self,
        config: GDLNConfig,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.config = config
        self.node_names = list(config.nodes)
        self.edge_names = list(config.edges)
        self.order = _topological_order(self.node_names, config.edges)
        self.weights = nn.ParameterDict()
        for name, (src, dst) in config.edges.items():
            w = torch.randn(config.nodes[dst], config.nodes[src], generator=generator, dtype=dtype)
            self.weights[name] = nn.Parameter((w * config.init_std).to(device))
        self._incoming = {
            v: [(e, s) for e, (s, t) in config.edges.items() if t == v] for v in self.node_names
        }
        self._node_col = {v: k for k, v in enumerate(self.node_names)}
        self._edge_col = {e: k for k, e in enumerate(self.edge_names)}

    def node_index(self, name: str) -> int:
        """Column of node ``name`` in a node-gate matrix."""
        return self._node_col[name]

    def edge_index(self, name: str) -> int:
        """Column of edge ``name`` in an edge-gate matrix."""
        return self._edge_col[name]

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        node_gates: torch.Tensor | None = None,
        edge_gates: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Activations of the output nodes.

        Args:
          inputs: per input node, shape (N, D_v).
          node_gates: (N, V) in {0, 1}, columns in ``config.nodes`` order (None: all on).
          edge_gates: (N, E) in {0, 1}, columns in ``config.edges`` order (None: all on).

        Returns:
          per output node, shape (N, D_v).
        """
        n = next(iter(inputs.values())).shape[0]
        h: dict[str, torch.Tensor] = {}
        for v in self.order:
            if v in self.config.inputs:
                hv = inputs[v]  # (N, D_v)
            else:
                hv = None
                for e, src in self._incoming[v]:
                    msg = h[src] @ self.weights[e].T  # (N, D_v)
                    if edge_gates is not None:
                        msg = msg * edge_gates[:, self._edge_col[e], None]
                    hv = msg if hv is None else hv + msg
                if hv is None:  # a node nothing flows into stays silent
                    hv = torch.zeros(n, self.config.nodes[v], dtype=self._dtype(), device=self._device())
            if node_gates is not None:
                hv = hv * node_gates[:, self._node_col[v], None]
            h[v] = hv
        return {v: h[v] for v in self.config.outputs}

    def loss(self, inputs, targets, node_gates=None, edge_gates=None) -> torch.Tensor:
        """:func:`gated_squared_loss` on one batch (output nodes gated by their node gates)."""
        out = self(inputs, node_gates, edge_gates)
        gates = None
        if node_gates is not None:
            gates = {v: node_gates[:, self._node_col[v]] for v in self.config.outputs}
        return gated_squared_loss(out, targets, gates)

    def _dtype(self) -> torch.dtype:
        return next(iter(self.weights.values())).dtype

    def _device(self) -> torch.device:
        return next(iter(self.weights.values())).device


def _topological_order(nodes: list[str], edges: dict[str, tuple[str, str]]) -> list[str]:
    """Kahn's algorithm, ties broken by declaration order (so the order is deterministic)."""
    indegree = {v: 0 for v in nodes}
    for _, dst in edges.values():
        indegree[dst] += 1
    ready = [v for v in nodes if indegree[v] == 0]
    order = []
    while ready:
        v = ready.pop(0)
        order.append(v)
        for src, dst in edges.values():
            if src == v:
                indegree[dst] -= 1
                if indegree[dst] == 0:
                    ready.append(dst)
    if len(order) != len(nodes):
        raise ValueError("the GDLN graph has a cycle")
    return order


# ---------------------------------------------------------------------------------------------
# Routing network, vectorised over routes.
# ---------------------------------------------------------------------------------------------


def cyclic_routes(m: int, k: int) -> torch.Tensor:
    """Trained-route mask (M, M): input domain i is trained with outputs i, i+1, …, i+K−1 (mod M).

    Every input and every output domain then serves exactly K trained routes (the balanced design
    the reduced ODE assumes).

    >>> cyclic_routes(3, 2).int().tolist()
    [[1, 1, 0], [0, 1, 1], [1, 0, 1]]
    """
    if not 1 <= k <= m:
        raise ValueError(f"need 1 <= K <= M, got K={k}, M={m}")
    i = torch.arange(m)[:, None]
    j = torch.arange(m)[None, :]
    return ((j - i) % m) < k


@dataclass
class RoutingConfig:
    """M per-domain linear encoders → one shared linear layer → M per-domain linear decoders.

    init: "gaussian" (std = init_gain/√fan_in) or "orthogonal" (init_gain × a (semi-)orthogonal
    matrix, as torch.nn.init.orthogonal_).
    """

    n_domains: int
    in_dim: int
    hidden_dim: int
    out_dim: int
    init_gain: float = 1.0
    init: str = "gaussian"


class RoutingNetwork(nn.Module):
    """The routing GDLN; every forward pass evaluates all M×M routes at once."""

    def __init__(
        self,
        config: RoutingConfig,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.config = config
        m, d, h, c = config.n_domains, config.in_dim, config.hidden_dim, config.out_dim
        self.encoders = nn.Parameter(self._init((m, h, d), generator, dtype).to(device))  # (M,H,D)
        self.shared = nn.Parameter(self._init((1, h, h), generator, dtype)[0].to(device))  # (H,H)
        self.decoders = nn.Parameter(self._init((m, c, h), generator, dtype).to(device))  # (M,C,H)

    def _init(self, shape, generator, dtype) -> torch.Tensor:
        gain = self.config.init_gain
        w = torch.empty(shape, dtype=dtype)
        if self.config.init == "gaussian":
            return w.normal_(0.0, gain / math.sqrt(shape[-1]), generator=generator)
        if self.config.init == "orthogonal":
            for block in w:
                nn.init.orthogonal_(block, gain=gain, generator=generator)
            return w
        raise ValueError(f"unknown init {self.config.init!r}")

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Shared-layer output for every input domain: x (M, N, D) or (N, D) → (M, N, H)."""
        if x.dim() == 2:
            enc = torch.einsum("nd,mhd->mnh", x, self.encoders)  # (M, N, H)
        else:
            enc = torch.einsum("mnd,mhd->mnh", x, self.encoders)  # (M, N, H)
        return enc @ self.shared.T  # (M, N, H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of every route: x (M, N, D) per input domain, or (N, D) shared → (M, M, N, C).

        out[i, j] = decoder_j · shared · encoder_i · x_i.
        """
        z = self.hidden(x)  # (M, N, H)
        return torch.einsum("inh,jch->ijnc", z, self.decoders)  # (M_in, M_out, N, C)

    def loss(self, x: torch.Tensor, y: torch.Tensor, routes: torch.Tensor) -> torch.Tensor:
        """½ mean over trained routes and examples of ‖y − out‖².

        Args:
          x: (M, N, D) or (N, D).  y: targets per output domain (M, N, C), or (N, C) shared.
          routes: (M, M) boolean mask of trained routes (input domain, output domain).

        Equals :func:`gated_squared_loss` of the GDLN whose examples are (item, trained route)
        pairs.
        """
        out = self(x)  # (M, M, N, C)
        target = y[None, :, :, :] if y.dim() == 3 else y[None, None]
        err = 0.5 * (out - target).pow(2).sum(dim=-1).mean(dim=-1)  # (M, M)
        mask = routes.to(err.dtype)
        return (err * mask).sum() / mask.sum()


class TwoLayerReLU(nn.Module):
    """y = W2 ReLU(W1 x), no biases, weights i.i.d. N(0, init_std²): the XoR comparison network."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        *,
        init_std: float,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        w1 = torch.randn(hidden_dim, in_dim, generator=generator, dtype=dtype) * init_std
        w2 = torch.randn(out_dim, hidden_dim, generator=generator, dtype=dtype) * init_std
        self.w1 = nn.Parameter(w1.to(device))  # (H, D)
        self.w2 = nn.Parameter(w2.to(device))  # (C, H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w1.T) @ self.w2.T  # (N, C)

    def active(self, x: torch.Tensor) -> torch.Tensor:
        """Which hidden units are on for each example, (N, H): the gates the ReLU network learns."""
        return (x @ self.w1.T) > 0
