"""Zero-shot generalisation on MNIST-PermIn-PermOut (Saxe et al. 2022; docs/experiments/gdln.md).

Route choice (``route_mode``): "random" (each input domain trained with K distinct output
domains drawn uniformly), "random_total" (K·M of the M² routes drawn uniformly), "cyclic"
(outputs i..i+K−1 mod M: the authors' ``<K>_plus_mod``) or "cyclic_permuted" (that, with the
output columns shuffled: their ``..._permute``); one draw per index in ``route_draws``. Every run
trains until its trained routes fit the *training* images to ``fit_accuracy`` (checked every
``eval_every`` steps, at most ``max_steps``); for gains > 1 the learning rate is picked from
``lr_grid`` (multiples of lr / gain²) by the training loss after ``trial_steps``. Trained- and
untrained-route accuracy is measured on held-out images.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.nn import functional as F

from taskabs.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Interval, exceeds
from taskabs.experiments.gdln.runs import (
    ExperimentResult,
    _preset,
    _torch_threads,
    load_mnist_subset,
    permin_permout_domains,
)
from taskabs.gdln.network import RoutingConfig, RoutingNetwork, cyclic_routes

__all__ = ["ROUTE_MODES", "PAPER_CURVE", "route_mask", "zero_shot_experiment", "zero_shot_checks"]


def _route_accuracy(net: RoutingNetwork, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Accuracy of every route (M_in, M_out): x (M, N, D), labels per output domain (M, N)."""
    with torch.no_grad():
        pred = net(x).argmax(dim=-1)  # (M, M, N)
        return (pred == labels[None]).double().mean(dim=-1)


def _route_loss(out: torch.Tensor, labels: torch.Tensor, routes: torch.Tensor, loss: str):
    """Mean over trained routes of the per-route loss; out (M, M, N, C), labels (M, N)."""
    if loss == "cross_entropy":
        target = labels[None].expand(out.shape[0], -1, -1)  # (M, M, N)
        per = F.cross_entropy(out.permute(0, 3, 1, 2), target, reduction="none").mean(-1)
    elif loss == "mse":
        onehot = F.one_hot(labels, out.shape[-1]).to(out.dtype)
        onehot = onehot - 1.0 / out.shape[-1]  # centred: inputs are centred, there is no bias
        per = 0.5 * (out - onehot[None]).pow(2).sum(-1).mean(-1)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    mask = routes.to(per.dtype)
    return (per * mask).sum() / mask.sum()


ROUTE_MODES = ("random", "random_total", "cyclic", "cyclic_permuted")


def route_mask(m: int, k: int, mode: str, *, generator: torch.Generator) -> torch.Tensor:
    """Trained-route mask (M, M): K·M trained routes, K per input domain except for "random_total"."""
    if mode == "cyclic":
        return cyclic_routes(m, k)
    if mode == "cyclic_permuted":
        return cyclic_routes(m, k)[:, torch.randperm(m, generator=generator)]
    if mode == "random_total":  # K·M of the M² routes, uniformly: inputs get unequal numbers
        mask = torch.zeros(m * m, dtype=torch.bool)
        mask[torch.randperm(m * m, generator=generator)[: k * m]] = True
        return mask.view(m, m)
    if mode != "random":
        raise ValueError(f"unknown route_mode {mode!r}; expected one of {ROUTE_MODES}")
    mask = torch.zeros(m, m, dtype=torch.bool)
    for i in range(m):
        mask[i, torch.randperm(m, generator=generator)[:k]] = True
    return mask


def _train(net, opt, x, labels, routes, *, steps, batch, loss, generator, stop=None, eval_every=1):
    """SGD on the trained routes; stops early when ``stop()`` is true (checked every eval_every)."""
    for step in range(steps):
        if stop is not None and step % eval_every == 0 and stop():
            return step
        idx = torch.randint(x.shape[1], (batch,), generator=generator)
        value = _route_loss(net(x[:, idx]), labels[:, idx], routes, loss)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    return steps


def zero_shot_experiment(
    *,
    seed: int = 0,
    device: str = "cpu",
    n_threads: int = 1,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    loss: str = "cross_entropy",
    momentum: float = 0.9,
    **overrides,
) -> ExperimentResult:
    """Trained vs untrained-route accuracy against K/M (smallest gain) and against the init gain
    (at K = gain_sweep_k), each over ``route_draws`` route draws; data and network as
    ``runs.permin_permout_domains`` and ``RoutingNetwork`` (no biases, Gaussian init
    std = gain/√fan_in). Rows: one per (draw, K, gain) with train_fit_acc (trained routes, training
    images), trained_acc and untrained_acc (test images), steps, lr, train_loss."""
    p = _preset("zero_shot", overrides)
    started = time.process_time()
    images, labels = load_mnist_subset() if data is None else data
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    train_idx, test_idx = order[: p["n_train"]], order[p["n_train"] : p["n_train"] + p["n_test"]]
    m = p["n_domains"]
    inputs, out_labels, _, _ = permin_permout_domains(
        images, labels, n_domains=m, rng=rng, pool=p["pool"], standardise_on=train_idx
    )
    x_all = torch.tensor(inputs, dtype=torch.float32, device=device)  # (M, N, D)
    lab_all = torch.tensor(out_labels, dtype=torch.long, device=device)  # (M, N)
    x_train, lab_train = x_all[:, train_idx], lab_all[:, train_idx]
    x_test, lab_test = x_all[:, test_idx], lab_all[:, test_idx]
    fit_idx = torch.arange(min(x_train.shape[1], p["n_test"]))
    n_classes = int(lab_all.max()) + 1
    small = min(p["gains"])
    runs = [(kk, small) for kk in p["k_values"]]
    runs += [(p["gain_sweep_k"], g) for g in p["gains"] if (p["gain_sweep_k"], g) not in runs]

    rows, arrays = [], {}
    with _torch_threads(n_threads):
        for draw in range(p["route_draws"]):
            route_gen = torch.Generator().manual_seed(seed * 7919 + draw)
            masks = {
                kk: route_mask(m, kk, p["route_mode"], generator=route_gen)
                for kk in sorted(set(p["k_values"]) | {p["gain_sweep_k"]})
            }
            for run_id, (kk, gain) in enumerate(runs):
                run_start = time.process_time()
                routes = masks[kk].to(device)
                cfg = RoutingConfig(
                    n_domains=m,
                    in_dim=x_all.shape[-1],
                    hidden_dim=p["n_hidden"],
                    out_dim=n_classes,
                    init_gain=gain,
                )

                def fresh():
                    gen = torch.Generator().manual_seed(seed * 1000 + draw * 100 + run_id)
                    return RoutingNetwork(cfg, generator=gen, dtype=torch.float32).to(device), gen

                base_lr = p["lr"] / max(1.0, gain) ** 2
                candidates = [base_lr * f for f in p["lr_grid"]] if gain > 1.0 else [base_lr]
                trial = {}
                if len(candidates) > 1:  # the lr is chosen on the training loss, never on test
                    for lr in candidates:
                        net, gen = fresh()
                        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
                        _train(
                            net,
                            opt,
                            x_train,
                            lab_train,
                            routes,
                            steps=p["trial_steps"],
                            batch=p["batch"],
                            loss=loss,
                            generator=gen,
                        )
                        with torch.no_grad():
                            value = float(
                                _route_loss(net(x_train[:, fit_idx]), lab_train[:, fit_idx], routes, loss)
                            )
                        trial[lr] = value if np.isfinite(value) else np.inf
                lr = min(trial, key=trial.get) if trial else candidates[0]
                net, gen = fresh()
                opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)

                def fit_acc() -> float:
                    acc = _route_accuracy(net, x_train[:, fit_idx], lab_train[:, fit_idx])
                    return float(acc[routes].mean())

                steps = _train(
                    net,
                    opt,
                    x_train,
                    lab_train,
                    routes,
                    steps=p["max_steps"],
                    batch=p["batch"],
                    loss=loss,
                    generator=gen,
                    stop=lambda: fit_acc() >= p["fit_accuracy"],
                    eval_every=p["eval_every"],
                )
                acc = _route_accuracy(net, x_test, lab_test)
                with torch.no_grad():
                    train_loss = float(
                        _route_loss(net(x_train[:, fit_idx]), lab_train[:, fit_idx], routes, loss)
                    )
                rows.append(
                    {
                        "draw": draw,
                        "route_mode": p["route_mode"],
                        "n_domains": m,
                        "k": kk,
                        "k_over_m": kk / m,
                        "gain": gain,
                        "lr": lr,
                        "loss": loss,
                        "n_steps": steps,
                        "reached_fit": fit_acc() >= p["fit_accuracy"],
                        "train_fit_acc": fit_acc(),
                        "trained_acc": float(acc[routes].mean()),
                        "untrained_acc": float(acc[~routes].mean()) if (~routes).any() else float("nan"),
                        "train_loss": train_loss,
                        "cpu_seconds": time.process_time() - run_start,
                    }
                )
                arrays[f"draw{draw}_k{kk}_gain{gain:g}_route_acc"] = acc.cpu().numpy()
                arrays[f"draw{draw}_k{kk}_routes"] = routes.cpu().numpy()
    summary = {"n_domains": m, "n_runs": len(rows), "cpu_seconds": time.process_time() - started}
    return ExperimentResult(summary=summary, rows=rows, arrays=arrays)


# The paper's untrained-route accuracy (MNIST-100) at K/M = 10 / 20 / 30 / 40% (docs/science.md §3).
PAPER_CURVE = {1: 0.29, 2: 0.55, 3: 0.89, 4: 0.91}  # K (of M = 10) -> accuracy
PAPER_INIT_GAP = 0.2  # untrained accuracy, smallest minus largest gain (paper: 0.74 - 0.31 = 0.43)
MATCH = 0.05  # trained-route test accuracies compared only when they differ by at most this


def zero_shot_checks(rows: list[dict]) -> dict:
    """Verdicts and numbers of race.zero_shot.routes and race.zero_shot.init from the run rows.

    routes: untrained accuracy at the smallest gain per K (interval over route draws) against the
    paper's four points; reproduced when every point is inside its interval or within MATCH of
    the mean. init: untrained(smallest gain) − untrained(largest gain) per draw, judged only when
    every gain's trained-route test accuracy is within MATCH of the smallest gain's (else
    inconclusive); reproduced when its interval lies above PAPER_INIT_GAP.
    """
    out: dict = {}
    small = min(r["gain"] for r in rows)
    m = rows[0]["n_domains"]
    parts, hits, devs = [], [], []
    for k, paper in PAPER_CURVE.items():
        values = [r["untrained_acc"] for r in rows if r["gain"] == small and r["k"] * 10 == k * m]
        if not values:
            continue
        iv = Interval.of(values)
        trained = np.mean([r["trained_acc"] for r in rows if r["gain"] == small and r["k"] * 10 == k * m])
        out[f"untrained_acc_k{k}"], out[f"trained_acc_k{k}"] = iv.mean, float(trained)
        hit = abs(iv.mean - paper) <= MATCH or (iv.defined and iv.low <= paper <= iv.high)
        hits.append(hit)
        devs.append(abs(iv.mean - paper))
        parts.append(f"{10 * k}%: {iv.text()} vs paper {paper} (trained {trained:.3f})")
    out["curve_max_abs_dev"] = max(devs) if devs else float("nan")
    if not hits:
        out["routes_verdict"], out["routes_details"] = INCONCLUSIVE, "no K/M of the paper's curve was run"
    else:
        out["routes_verdict"] = REPRODUCED if all(hits) else NOT_REPRODUCED
        prefix = "partly: " if any(hits) and not all(hits) else ""
        out["routes_details"] = prefix + f"{sum(hits)}/{len(hits)} points match; " + "; ".join(parts)

    k_sweep = max({r["k"] for r in rows}, key=lambda k: len({r["gain"] for r in rows if r["k"] == k}))
    sweep = [r for r in rows if r["k"] == k_sweep]
    gains = sorted({r["gain"] for r in sweep})
    per_gain = {g: [r for r in sweep if r["gain"] == g] for g in gains}
    trained = {g: float(np.mean([r["trained_acc"] for r in per_gain[g]])) for g in gains}
    fit = {g: float(np.mean([r["train_fit_acc"] for r in per_gain[g]])) for g in gains}
    untrained = {g: float(np.mean([r["untrained_acc"] for r in per_gain[g]])) for g in gains}
    for g in gains:
        out[f"trained_acc_gain{g:g}"], out[f"untrained_acc_gain{g:g}"] = trained[g], untrained[g]
        out[f"train_fit_acc_gain{g:g}"] = fit[g]
    mismatch = max(abs(trained[g] - trained[gains[0]]) for g in gains)
    out["trained_acc_mismatch"] = mismatch
    lo, hi = gains[0], gains[-1]
    gap = Interval.of(
        [
            a["untrained_acc"] - b["untrained_acc"]
            for a, b in zip(per_gain[lo], per_gain[hi])
            if a["draw"] == b["draw"]
        ]
    )
    out["untrained_gap_large_init"] = gap.mean
    table = ", ".join(
        f"gain {g:g}: trained {trained[g]:.3f} (train fit {fit[g]:.3f}), untrained {untrained[g]:.3f}"
        for g in gains
    )
    if mismatch > MATCH:
        out["init_verdict"] = INCONCLUSIVE
        out["init_details"] = (
            f"trained-route accuracies differ by {mismatch:.3f} > {MATCH}: not compared; {table}"
        )
    else:
        out["init_verdict"] = exceeds(gap, PAPER_INIT_GAP)
        out["init_details"] = (
            f"untrained(gain {lo:g}) - untrained(gain {hi:g}) {gap.text()} vs > {PAPER_INIT_GAP} "
            f"(K/M = {k_sweep / m:.1f}, trained accuracies within {mismatch:.3f}); {table}"
        )
    return out
