"""The GBI toy-sequence experiment (SCIENCE.md §1): stage functions called by Snakemake jobs.

Documented choices (docs/experiments/sequence.md):
- Training is online over a *blocked curriculum*: every training stream shares one block schedule,
  so the whole batch sees one task at a time and forgetting is measurable.  Step i trains on chunk i
  (trials [i*L, (i+1)*L) of every stream), each chunk starting from a zero state.
- The GBI-LSTM is given the true task one-hot z_t; the plain LSTM is the same network given the
  maximum-entropy z (1/C, ...): matched size, no task information.  Two extra models: the
  shuffled-z control (block labels permuted across blocks) and the gated GBI-LSTM (NeuraGEM's
  multiplicative gating of the hidden and cell state), see taskabs.models.sequence.
- Inference at trial t uses the window of the last W trials with one shared z; the Bayesian
  reference is the exact filtering posterior p(k_t | x_{1:t}) of the semi-Markov process.
- Forgetting, the paper's way: after training, the loss on the second-to-last training block's own
  data, cut into windows of ``evaluation.context`` trials each seen from a zero state (a short
  context, like NeuraGEM's truncation window), with z given and with z inferred by one-step GBI.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch

from taskabs import inference
from taskabs.artifacts import save_checkpoint, write_json, write_npz, write_table
from taskabs.data.sequences import (
    SequenceSpec,
    exact_posterior,
    sample_observations,
    sample_streams,
    window_posterior,
)
from taskabs.models.sequence import build_model, load_model, spec_from, task_input
from taskabs.train import train as run_training

if TYPE_CHECKING:  # stages see a Job; importing the job machinery would put it in their code hash
    from taskabs.pipeline.jobs import Job

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- data
def generate(job: Job) -> dict:
    """Training streams (blocked), test streams (independent schedules), probes and novel tasks."""
    spec, data = spec_from(job.config), job.config["data"]
    rng = np.random.default_rng(data["seed"])
    tasks, x = sample_streams(spec, data["train_streams"], data["train_length"], rng, shared_schedule=True)
    write_npz(job.output["train"], tasks=tasks, x=x)
    tasks, x = sample_streams(spec, data["test_streams"], data["test_length"], rng, shared_schedule=False)
    write_npz(job.output["test"], tasks=tasks, x=x)
    # probes: fresh sequences of each trained task, then of each novel task (no switches inside)
    all_means = [*spec.means, *map(tuple, data["novel_means"])]
    probe_spec = SequenceSpec(means=tuple(all_means), sigma=spec.sigma, block_min=1, block_max=1)
    n, length = data["probe_streams"], data["probe_length"]
    probe_tasks = np.repeat(np.arange(len(all_means)), n)[:, None].repeat(length, axis=1)
    write_npz(
        job.output["probes"],
        tasks=probe_tasks,
        x=sample_observations(probe_spec, probe_tasks, rng),
        means=np.asarray(all_means, dtype=np.float32),
        novel=np.arange(len(all_means)) >= spec.n_tasks,
    )
    return {"train_trials": float(x.size)}


# ------------------------------------------------------------------------------------ training
def train(job: Job) -> dict:
    cfg, model_name = job.config, job.wildcards["model"]
    spec = spec_from(cfg)
    data = np.load(job.input["train"])
    x, tasks = torch.from_numpy(data["x"]), torch.from_numpy(data["tasks"])
    chunk = cfg["train"]["chunk"]
    steps = x.shape[1] // chunk
    # the shuffled-z control draws its block permutation from its own seed
    shuffle = torch.Generator().manual_seed(int(job.seed))
    z_all = task_input(model_name, tasks, spec.n_tasks, generator=shuffle)  # (S, T, C)
    model = build_model(cfg, model_name).to(job.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg["train"]["lr"])

    def step_loss(net, step):
        window = slice(step * chunk, (step + 1) * chunk)
        xb, zb = x[:, window].to(job.device), z_all[:, window].to(job.device)
        return net.loss_per_example(xb, zb).mean(), {}

    result = run_training(
        model,
        optimiser,
        step_loss,
        steps=steps,
        checkpoint_path=Path(job.params["checkpoint"]),
        checkpoint_every=cfg["train"]["checkpoint_every"],
        resolved_config={**cfg, "model_name": model_name, "seed": job.seed},
        description=f"{model_name} seed {job.seed}",
        progress=job.training_progress("train_loss"),
    )
    losses = result.history["loss"]
    save_checkpoint(
        {
            "model": model.cpu().state_dict(),
            "config": cfg,
            "model_name": model_name,
            "seed": job.seed,
            "history": result.history,
        },
        job.output["model"],
    )
    curve = {
        "step": np.arange(len(losses)),
        "loss": losses,
        "task": tasks[0, ::chunk][: len(losses)].numpy(),
        "z_task": z_all[0, ::chunk].argmax(-1)[: len(losses)].numpy(),  # the task z named (lstm: 0)
    }
    write_table(pl.DataFrame(curve), job.output["curve"])
    Path(job.params["checkpoint"]).unlink(missing_ok=True)  # only needed to resume this job
    job.log_curve("train_loss", losses)
    return {
        "final_loss": float(np.mean(losses[-max(1, len(losses) // 10) :])),
        "resumed_from_step": float(result.resumed_from),
    }


# ----------------------------------------------------------------------------------- inference
def windows_of(x: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All windows of ``width`` consecutive trials: (N, W, D), with their stream and end index."""
    S, T, _ = x.shape
    ends = np.arange(width - 1, T)
    idx = ends[:, None] + np.arange(-width + 1, 1)[None, :]  # (E, W)
    windows = x[:, idx]  # (S, E, W, D)
    streams = np.repeat(np.arange(S), len(ends))
    return windows.reshape(S * len(ends), width, -1), streams, np.tile(ends, S)


def time_since_switch(tasks: np.ndarray) -> np.ndarray:
    """Trials since the current block started, per trial: (S, T) -> (S, T), 0 at a switch."""
    out = np.zeros_like(tasks)
    for t in range(1, tasks.shape[1]):
        out[:, t] = np.where(tasks[:, t] == tasks[:, t - 1], out[:, t - 1] + 1, 0)
    return out


def centred_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two (N, C) score arrays after removing each row's mean.

    Log-probabilities are defined up to a per-row constant; centring removes it.
    """
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def infer(job: Job) -> dict:
    cfg = job.config["inference"]
    model, state = load_model(job.input["model"])
    spec = spec_from(state["config"])
    data = np.load(job.input["test"])
    x, tasks = data["x"], data["tasks"]
    windows, streams, ends = windows_of(x, cfg["window"])
    xw = torch.from_numpy(windows).to(job.device)
    model.to(job.device)
    for p in model.parameters():
        p.requires_grad_(False)

    def loss_fn(z):
        return model.loss_per_example(xw, z)

    B, C = len(xw), spec.n_tasks
    g = inference.one_step(loss_fn, B, C, device=job.device).cpu().numpy()
    it = inference.iterative(
        loss_fn, B, C, steps=cfg["iterative_steps"], lr=cfg["iterative_lr"], device=job.device
    )
    z_iter = it.z.cpu().numpy()
    exhaustive = inference.exhaustive(loss_fn, B, C, device=job.device).cpu().numpy()
    exact = exact_posterior(spec, x)[streams, ends]  # (N, C)
    window_post = window_posterior(spec, windows)
    truth = tasks[streams, ends]
    since = time_since_switch(tasks)[streams, ends]
    predictions = {
        "one_step": g.argmin(1),
        "iterative": z_iter.argmax(1),
        "exhaustive": exhaustive.argmin(1),
        "exact_posterior": exact.argmax(1),
        "window_posterior": window_post.argmax(1),
    }
    table = pl.DataFrame(
        {
            "stream": streams,
            "t": ends,
            "task": truth,
            "since_switch": since,
            **{f"pred_{k}": v for k, v in predictions.items()},
            **{f"neg_grad_{c}": -g[:, c] for c in range(C)},
            **{f"exact_logp_{c}": exact[:, c] for c in range(C)},
            **{f"window_logp_{c}": window_post[:, c] for c in range(C)},
        }
    )
    write_table(table, job.output["table"])
    metrics = {f"accuracy_{k}": float(np.mean(v == truth)) for k, v in predictions.items()}
    log_z = np.log(np.clip(z_iter, 1e-12, None))
    metrics |= {
        "corr_one_step_exact": centred_correlation(-g, exact),
        "corr_one_step_window": centred_correlation(-g, window_post),
        "corr_iterative_exact": centred_correlation(log_z, exact),
        "agreement_one_step_exhaustive": float(np.mean(predictions["one_step"] == predictions["exhaustive"])),
    }
    write_json(job.output["metrics"], {"model": job.wildcards["model"], "seed": job.seed, **metrics})
    return metrics


# ------------------------------------------------------------------------------- recomposition
def recompose(job: Job) -> dict:
    """Optimise a free z per probe stream with the weights frozen; loss before / after."""
    cfg = job.config["recomposition"]
    model, state = load_model(job.input["model"])
    probes = np.load(job.input["probes"])
    x = torch.from_numpy(probes["x"]).to(job.device)
    tasks, means, novel = probes["tasks"][:, 0], probes["means"], probes["novel"]
    for p in model.parameters():
        p.requires_grad_(False)
    C = model.config.n_tasks

    def loss_fn(z):
        return model.loss_per_example(x, z)

    result = inference.iterative(
        loss_fn, len(x), C, steps=cfg["steps"], lr=cfg["lr"], simplex=False, device=job.device
    )
    best_one_hot = inference.exhaustive(loss_fn, len(x), C, device=job.device).min(1).values
    frame = pl.DataFrame(
        {
            "probe_task": tasks,
            "mean": means[tasks, 0],
            "novel": novel[tasks],
            "loss_before": result.loss_trace[0].cpu().numpy(),
            "loss_after": result.loss_trace[-1].cpu().numpy(),
            "loss_best_one_hot": best_one_hot.cpu().numpy(),
            **{f"z_{c}": result.z[:, c].cpu().numpy() for c in range(C)},
        }
    )
    table = (
        frame.group_by("probe_task", "mean", "novel", maintain_order=True)
        .agg(pl.exclude("probe_task", "mean", "novel").mean())
        .with_columns(model=pl.lit(job.wildcards["model"]), seed=pl.lit(job.seed))
    )
    write_table(table, job.output["table"])
    novel_rows = table.filter(pl.col("novel"))
    return {
        "novel_loss_before": float(novel_rows["loss_before"].mean()),
        "novel_loss_after": float(novel_rows["loss_after"].mean()),
    }


# ---------------------------------------------------------------------------------- evaluation
def last_two_block_tasks(schedule: np.ndarray) -> tuple[int, int]:
    """(second-to-last, last) block's task of a training schedule (T,)."""
    starts = np.flatnonzero(np.diff(schedule)) + 1
    if len(starts) == 0:
        raise ValueError("the training schedule has a single block: forgetting is undefined")
    return int(schedule[starts[-1] - 1]), int(schedule[-1])


def shared_unit_ratio(
    h: np.ndarray, tasks: np.ndarray, *, active: float = 0.05, shared: float = 0.5
) -> float:
    """Fraction of active hidden units engaged by every task.

    a[u, k] = mean |h_u| over trials of task k; a unit is active if max_k a[u, k] > ``active``, and
    shared if min_k a[u, k] >= ``shared`` * max_k a[u, k].  Returns NaN if no unit is active.
    """
    a = np.stack([np.abs(h[tasks == k]).mean(0) for k in np.unique(tasks)], axis=1)  # (U, K)
    on = a.max(1) > active
    if not on.any():
        return float("nan")
    return float(np.mean(a[on].min(1) >= shared * a[on].max(1)))


def block_trials(schedule: np.ndarray, which: int) -> slice:
    """The trials of block ``which`` (Python indexing: -2 is the second-to-last) of a schedule (T,)."""
    starts = np.concatenate([[0], np.flatnonzero(np.diff(schedule)) + 1, [len(schedule)]])
    begin = starts[:-1][which]
    return slice(int(begin), int(starts[starts > begin][0]))


def context_windows(x: np.ndarray, width: int) -> np.ndarray:
    """Non-overlapping windows of ``width`` trials tiling each stream from its start: (S, L, D) ->
    (S * (L // width), width, D); a last partial window is dropped."""
    S, L, D = x.shape
    n = L // width
    if n == 0:
        raise ValueError(f"a context of {width} trials is longer than the block ({L} trials)")
    return x[:, : n * width].reshape(S * n, width, D)


def forgetting_rows(model, model_name: str, x: np.ndarray, task: int, n_tasks: int, contexts) -> list[dict]:
    """MSE on one block's data (S, L, D) of task ``task``, per context length and z protocol.

    Each window of ``context`` trials starts from a zero state.  ``z_given``: the model's own
    evaluation input (true one-hot; maximum entropy for the LSTM).  ``z_inferred``: one-step GBI on
    the window from z0 = 1/C, then the loss at the one-hot of argmin g (the paper's inference; for
    the LSTM this optimises the same input, as in the paper's control).
    """
    rows = []
    for width in contexts:
        xw = torch.from_numpy(context_windows(x, width))
        z = task_input(model_name, torch.full((len(xw),), task), n_tasks)

        def loss_fn(zz, xw=xw):
            return model.loss_per_example(xw, zz)

        with torch.no_grad():
            given = loss_fn(z)
        g = inference.one_step(loss_fn, len(xw), n_tasks)
        picked = g.argmin(1)
        with torch.no_grad():
            inferred = loss_fn(torch.nn.functional.one_hot(picked, n_tasks).float())
        for protocol, mse in (("z_given", given), ("z_inferred", inferred)):
            rows.append({"context": width, "z": protocol, "mse": float(mse.mean())})
        # not an MSE: the fraction of windows whose inferred z names the block's task
        accuracy = float((picked == task).float().mean())
        rows.append({"context": width, "z": "inferred_task_accuracy", "mse": accuracy})
    return rows


def evaluate(job: Job) -> dict:
    """Forgetting (loss on the second-to-last block's data, short context), shared units, learning speed."""
    model, state = load_model(job.input["model"])
    for p in model.parameters():
        p.requires_grad_(False)
    spec = spec_from(state["config"])
    model_name = job.wildcards["model"]
    cfg = job.config["evaluation"]
    train_data = np.load(job.input["train"])
    schedule = train_data["tasks"][0]
    penultimate, last = last_two_block_tasks(schedule)
    contexts = sorted({*map(int, cfg["contexts"]), int(cfg["context"])})
    rows = forgetting_rows(
        model, model_name, train_data["x"][:, block_trials(schedule, -2)], penultimate, spec.n_tasks, contexts
    )
    write_table(
        pl.DataFrame(rows).with_columns(
            chosen=pl.col("context") == int(cfg["context"]), model=pl.lit(model_name), seed=pl.lit(job.seed)
        ),
        job.output["forgetting"],
    )
    at = {r["z"]: r["mse"] for r in rows if r["context"] == int(cfg["context"])}

    probes = np.load(job.input["probes"])
    trained = probes["tasks"][:, 0] < spec.n_tasks
    x = torch.from_numpy(probes["x"][trained])
    tasks = torch.from_numpy(probes["tasks"][trained])
    z = task_input(model_name, tasks, spec.n_tasks)
    with torch.no_grad():
        prediction, h = model(x, z)
    mse = ((prediction - x) ** 2).mean(dim=(1, 2)).numpy()
    probe_task = tasks[:, 0].numpy()
    # learning speed: first step where the loss, averaged over the last ``smooth`` steps (which
    # spans block switches), falls below threshold * sigma^2
    smooth = cfg["learning_smooth_steps"]
    curve = np.convolve(state["history"]["loss"], np.ones(smooth) / smooth, mode="valid")
    threshold = cfg["learning_threshold_sigma2"] * spec.sigma**2
    below = np.flatnonzero(curve < threshold) + smooth - 1
    metrics = {
        "forgetting_mse_second_to_last": at["z_given"],
        "forgetting_mse_second_to_last_z_inferred": at["z_inferred"],
        # the previous protocol, kept as its own row: fresh 25-trial probes, z given, zero state
        "forgetting_mse_probe_full_context": float(mse[probe_task == penultimate].mean()),
        "mse_last_task": float(mse[probe_task == last].mean()),
        "shared_unit_ratio": shared_unit_ratio(h.reshape(-1, h.shape[-1]).numpy(), tasks.reshape(-1).numpy()),
        "steps_to_threshold": float(below[0]) if len(below) else float(len(curve)),
    }
    write_json(
        job.output["metrics"],
        {
            "model": model_name,
            "seed": job.seed,
            "penultimate_task": penultimate,
            "last_task": last,
            **metrics,
        },
    )
    return metrics
