"""The GBI language-model experiment (docs/science.md §1, third domain): stage functions for Snakemake jobs.

A character-level LSTM is trained on C text corpora with the corpus identity as its task
abstraction z.  Stages: ``gather`` (corpus text + manifest), ``prepare`` (vocabulary, block
splits), ``train`` (GBI-LSTM or LSTM), ``infer`` (corpus of test windows), ``recompose`` (z fitted
to known and held-out corpora), ``geometry`` (PS, CCGP of the final hidden state).  Design
choices: docs/experiments/language.md.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch

from taskabs import inference
from taskabs.artifacts import (
    load_checkpoint,
    load_frozen,
    save_checkpoint,
    write_json,
    write_npz,
    write_table,
)
from taskabs.data import corpora
from taskabs.geometry import (
    all_conditions,
    balanced_dichotomies,
    ccgp,
    dichotomy_parallelism_score,
    shattering_dimensionality,
)
from taskabs.models.language import CharModelConfig, CorpusConditionedCharLSTM
from taskabs.train import train as run_training

if TYPE_CHECKING:  # stages see a Job; importing the job machinery would put it in their code hash
    from taskabs.pipeline.jobs import Job

log = logging.getLogger(__name__)

MODELS = ("gbi_lstm", "lstm")
HELD_OUT_SPLITS = ("adapt", "evaluate")  # of each held-out corpus
VALIDATION_STREAM = 2**31  # generator key of the validation windows: beyond any training step


# ----------------------------------------------------------------------------------------- data
def corpus_specs(data: dict) -> dict[str, dict]:
    """Name -> gather spec: the project's quick corpora, overridden or extended by config."""
    return {**corpora.QUICK_CORPORA, **data.get("custom_corpora", {})}


def gather(job: Job) -> dict:
    """Raw text of every training and held-out corpus, and a manifest of origin and licence."""
    data = job.config["data"]
    out = Path(job.output["raw"])
    names = [*data["corpora"], *data["held_out"]]
    if data["source"] == "babylm":
        babylm = data["babylm"]
        archive = corpora.babylm_archive(babylm["url"], babylm["sha256"], Path(job.params["downloads"]))
        found = corpora.babylm_corpora(
            archive,
            split_dir=babylm["split_dir"],
            suffix=babylm["suffix"],
            max_chars=data["max_chars"],
            domains=names,
        )
    else:
        specs = corpus_specs(data)
        missing = [n for n in names if n not in specs]
        if missing:
            raise KeyError(
                f"language.data.corpora/held_out name unknown corpora {missing}; known: "
                f"{sorted(specs)} (add specs under language.data.custom_corpora)"
            )
        found = {n: corpora.gather_corpus(n, specs[n], max_chars=data["max_chars"]) for n in names}
    out.mkdir(parents=True, exist_ok=True)
    for name, (text, _) in found.items():
        corpora.write_corpus(out / f"{name}.txt", text)
    manifest = {
        name: {**prov, "role": "held_out" if name in data["held_out"] else "train"}
        for name, (_, prov) in found.items()
    }
    corpora.write_manifest(out / "manifest.json", manifest)
    return {f"chars_{name}": float(len(text)) for name, (text, _) in found.items()}


def prepare(job: Job) -> dict:
    """One character vocabulary from the training corpora; block splits of every corpus."""
    data = job.config["data"]
    raw = Path(job.input["raw"])
    texts = {name: corpora.read_corpus(raw / f"{name}.txt") for name in [*data["corpora"], *data["held_out"]]}
    vocab = corpora.CharVocab.build([texts[n] for n in data["corpora"]], min_count=data["min_count"])
    arrays, metrics = {}, {"vocab_size": float(vocab.size)}
    for name, text in texts.items():
        held_out = name in data["held_out"]
        fractions = {s: 0.5 for s in HELD_OUT_SPLITS} if held_out else data["fractions"]
        split = corpora.split_ids(
            vocab.encode(text), block=data["block"], fractions=fractions, seed=data["seed"]
        )
        arrays |= {f"{part}/{name}": ids for part, ids in split.items()}
        metrics[f"unknown_rate_{name}"] = vocab.unknown_rate(text)
    write_npz(job.output["corpora"], **arrays)
    write_json(
        job.output["vocab"], {**vocab.to_json(), "corpora": data["corpora"], "held_out": data["held_out"]}
    )
    return metrics


class Corpora:
    """The prepared arrays: ``ids(part, name)`` -> (N,) int64 character ids."""

    def __init__(self, corpora_path: Path, vocab_path: Path):
        meta = json.loads(Path(vocab_path).read_text())
        self.vocab = corpora.CharVocab.from_json(meta)
        self.names: list[str] = meta["corpora"]
        self.held_out: list[str] = meta["held_out"]
        with np.load(corpora_path) as arrays:
            self._arrays = {key: arrays[key].astype(np.int64) for key in arrays.files}

    def ids(self, part: str, name: str) -> np.ndarray:
        return self._arrays[f"{part}/{name}"]

    def windows(self, part: str, name: str, n: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """n windows of ``width`` characters at random offsets: (n, width)."""
        ids = self.ids(part, name)
        if len(ids) <= width:
            raise ValueError(
                f"corpus {name!r} {part} split has {len(ids)} characters; windows need > {width}"
            )
        starts = rng.integers(0, len(ids) - width, size=n)
        return ids[starts[:, None] + np.arange(width)[None, :]]

    def labelled_windows(
        self, part: str, n_per_corpus: int, width: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows of every training corpus, n_per_corpus each: ((C*n, width), (C*n,) corpus index)."""
        ids = np.concatenate([self.windows(part, name, n_per_corpus, width, rng) for name in self.names])
        labels = np.repeat(np.arange(len(self.names)), n_per_corpus)
        return torch.from_numpy(ids), torch.from_numpy(labels)


# ------------------------------------------------------------------------------------ training
def build_model(config: dict, vocab_size: int, n_tasks: int) -> CorpusConditionedCharLSTM:
    m = config["model"]
    return CorpusConditionedCharLSTM(
        CharModelConfig(vocab_size=vocab_size, n_tasks=n_tasks, embedding=m["embedding"], hidden=m["hidden"])
    )


def task_input(model_name: str, labels: torch.Tensor, n_tasks: int) -> torch.Tensor:
    """z: the true one-hot corpus for the GBI-LSTM, maximum entropy for the LSTM: (B, C)."""
    if model_name not in MODELS:
        raise ValueError(f"unknown language model {model_name!r}; expected one of {MODELS}")
    if model_name == "gbi_lstm":
        return torch.nn.functional.one_hot(labels, n_tasks).float()
    return inference.uniform_z(len(labels), n_tasks)


def load_model(path: Path) -> tuple[CorpusConditionedCharLSTM, dict]:
    state = load_checkpoint(path)
    return load_frozen(CorpusConditionedCharLSTM(CharModelConfig(**state["model_config"])), state), state


def frozen_model_and_corpora(job: Job) -> tuple[CorpusConditionedCharLSTM, Corpora]:
    """What the inference, recomposition and geometry stages start from."""
    model, _ = load_model(job.input["model"])
    return model.to(job.device), Corpora(job.input["corpora"], job.input["vocab"])


def train(job: Job) -> dict:
    cfg, model_name = job.config, job.wildcards["model"]
    data = Corpora(job.input["corpora"], job.input["vocab"])
    C, t = len(data.names), cfg["train"]
    if t["batch"] % C:
        raise ValueError(f"language.train.batch={t['batch']} must be a multiple of the {C} corpora")
    model = build_model(cfg, data.vocab.size, C).to(job.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=t["lr"])

    def step_loss(net, step):
        rng = np.random.default_rng([job.seed, step])
        ids, labels = data.labelled_windows("train", t["batch"] // C, t["window"], rng)
        z = task_input(model_name, labels, C)
        return net.loss_per_example(ids.to(job.device), z.to(job.device)).mean(), {}

    def lr_at(step):  # cosine decay from the peak to 0
        return t["lr"] * 0.5 * (1 + np.cos(np.pi * step / t["steps"]))

    result = run_training(
        model,
        optimiser,
        step_loss,
        steps=t["steps"],
        checkpoint_path=Path(job.params["checkpoint"]),
        checkpoint_every=t["checkpoint_every"],
        resolved_config={**cfg, "model_name": model_name, "seed": job.seed},
        description=f"{model_name} seed {job.seed}",
        lr_at=lr_at,
        clip_grad_norm=t["clip"],
        progress=job.training_progress("train_loss"),
    )
    model.cpu().eval()
    ids, labels = data.labelled_windows(
        "validation",
        cfg["evaluation"]["windows_per_corpus"],
        t["window"],
        np.random.default_rng([job.seed, VALIDATION_STREAM]),
    )
    with torch.no_grad():
        val = model.loss_per_example(ids, task_input(model_name, labels, C)).numpy()
    metrics = {
        f"validation_loss_{name}": float(val[labels.numpy() == c].mean()) for c, name in enumerate(data.names)
    }
    metrics["validation_loss"] = float(val.mean())
    losses = result.history["loss"]
    save_checkpoint(
        {
            "model": model.state_dict(),
            "model_config": vars(model.config),
            "config": cfg,
            "model_name": model_name,
            "seed": job.seed,
            "history": result.history,
            "corpora": data.names,
        },
        job.output["model"],
    )
    write_table(pl.DataFrame({"step": np.arange(len(losses)), "loss": losses}), job.output["curve"])
    Path(job.params["checkpoint"]).unlink(missing_ok=True)  # only needed to resume this job
    job.log_curve("train_loss", losses)
    return {
        **metrics,
        "final_loss": float(np.mean(losses[-max(1, len(losses) // 10) :])),
        "resumed_from_step": float(result.resumed_from),
    }


# ----------------------------------------------------------------------------------- inference
def infer(job: Job) -> dict:
    """Corpus of test windows by one-step, iterative and exhaustive GBI, per window length."""
    cfg = job.config["inference"]
    model, data = frozen_model_and_corpora(job)
    C = len(data.names)
    frames, metrics = [], {}
    for width in cfg["window_lengths"]:
        ids, labels = data.labelled_windows(
            "test", cfg["windows_per_corpus"], width, np.random.default_rng([job.seed, width])
        )
        ids = ids.to(job.device)

        def loss_fn(z):
            return model.loss_per_example(ids, z)

        g = inference.one_step(loss_fn, len(ids), C, device=job.device).cpu().numpy()
        it = inference.iterative(
            loss_fn, len(ids), C, steps=cfg["iterative_steps"], lr=cfg["iterative_lr"], device=job.device
        )
        exhaustive = inference.exhaustive(loss_fn, len(ids), C, device=job.device).cpu().numpy()
        truth = labels.numpy()
        predictions = {
            "one_step": g.argmin(1),
            "iterative": it.z.cpu().numpy().argmax(1),
            "exhaustive": exhaustive.argmin(1),
        }
        frames.append(
            pl.DataFrame(
                {
                    "window_length": np.full(len(truth), width),
                    "corpus": truth,
                    **{f"pred_{k}": v for k, v in predictions.items()},
                    **{f"neg_grad_{c}": -g[:, c] for c in range(C)},
                    **{f"loss_{c}": exhaustive[:, c] for c in range(C)},
                }
            )
        )
        metrics |= {f"accuracy_{k}_w{width}": float(np.mean(v == truth)) for k, v in predictions.items()}
        metrics[f"agreement_one_step_exhaustive_w{width}"] = float(
            np.mean(predictions["one_step"] == predictions["exhaustive"])
        )
    write_table(pl.concat(frames), job.output["table"])
    write_json(
        job.output["metrics"],
        {"model": job.wildcards["model"], "seed": job.seed, "corpora": data.names, **metrics},
    )
    return metrics


# ------------------------------------------------------------------------------- recomposition
def fit_shared_z(
    model: CorpusConditionedCharLSTM, ids: torch.Tensor, *, steps: int, lr: float, simplex: bool
) -> torch.Tensor:
    """One z for all windows ``ids`` (B, W), minimising their mean loss with the weights frozen: (C,)."""

    def loss_fn(z):  # z: (1, C) -> (1,)
        return model.loss_per_example(ids, z.expand(len(ids), -1)).mean().view(1)

    return inference.iterative(
        loss_fn, 1, model.config.n_tasks, steps=steps, lr=lr, simplex=simplex, device=ids.device
    ).z[0]


def recompose(job: Job) -> dict:
    """Per corpus: fit z on adaptation windows, score on evaluation windows (loss in nats/char)."""
    cfg = job.config["recomposition"]
    model, data = frozen_model_and_corpora(job)
    C = len(data.names)
    rng = np.random.default_rng(job.seed)
    rows = []
    # known corpora adapt on validation and are scored on test; held-out ones on their two halves
    parts = [(name, "validation", "test", False) for name in data.names]
    parts += [(name, "adapt", "evaluate", True) for name in data.held_out]
    for name, adapt_part, eval_part, held_out in parts:
        adapt = torch.from_numpy(data.windows(adapt_part, name, cfg["windows"], cfg["window"], rng)).to(
            job.device
        )
        evaluate = torch.from_numpy(data.windows(eval_part, name, cfg["windows"], cfg["window"], rng)).to(
            job.device
        )
        z_free = fit_shared_z(model, adapt, steps=cfg["steps"], lr=cfg["lr"], simplex=False)
        # mixture weights over the known corpora: only informative for a corpus not among them
        z_mix = (
            fit_shared_z(model, adapt, steps=cfg["steps"], lr=cfg["lr"], simplex=True) if held_out else None
        )

        def mean_loss(z):
            with torch.no_grad():
                return float(model.loss_per_example(evaluate, z.expand(len(evaluate), -1)).mean())

        one_hot = [mean_loss(torch.eye(C, device=job.device)[c]) for c in range(C)]
        rows.append(
            {
                "corpus": name,
                "held_out": held_out,
                "loss_uniform": mean_loss(inference.uniform_z(1, C, device=job.device)[0]),
                "loss_best_one_hot": min(one_hot),
                "best_one_hot": data.names[int(np.argmin(one_hot))],
                "loss_free_z": mean_loss(z_free),
                "loss_mixture_z": mean_loss(z_mix) if held_out else None,
                **{f"z_{known}": float(z_free[c]) for c, known in enumerate(data.names)},
                **{
                    f"mixture_{known}": float(z_mix[c]) if held_out else None
                    for c, known in enumerate(data.names)
                },
            }
        )
    table = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        model=pl.lit(job.wildcards["model"]), seed=pl.lit(job.seed)
    )
    write_table(table, job.output["table"])
    held = table.filter(pl.col("held_out"))
    return {
        "held_out_loss_uniform": float(held["loss_uniform"].mean()),
        "held_out_loss_free_z": float(held["loss_free_z"].mean()),
        "held_out_loss_mixture_z": float(held["loss_mixture_z"].mean()),
    }


# ----------------------------------------------------------------------------------- geometry
def corpus_geometry(
    activity: np.ndarray, corpus: np.ndarray, n_corpora: int, *, rng: np.random.Generator
) -> dict[str, float]:
    """PS of every balanced dichotomy of the corpora (mean, max), CCGP and shattering.

    Corpora have no factorial structure, so PS is reported for every balanced dichotomy; CCGP
    needs 2**d conditions and uses the corpus index's d bits as latents (NaN otherwise).
    """
    means = np.stack([activity[corpus == c].mean(0) for c in range(n_corpora)])  # (C, H)
    dichotomies = balanced_dichotomies(n_corpora, max_dichotomies=35, rng=rng)
    ps = (
        [dichotomy_parallelism_score(means, side, rng=rng) for side in dichotomies]
        if n_corpora % 2 == 0
        else [float("nan")]
    )
    out = {"ps_mean": float(np.mean(ps)), "ps_max": float(np.max(ps))}
    d = int(np.log2(n_corpora))
    if 2**d == n_corpora and d >= 2:
        labels = all_conditions(d)[corpus]
        out["ccgp"] = ccgp(activity, labels)
        out["shattering"] = shattering_dimensionality(activity, labels, rng=rng)
    else:
        out["ccgp"] = out["shattering"] = float("nan")
    return out


def geometry(job: Job) -> dict:
    """Geometry of the final hidden state of test windows, z at maximum entropy, against shuffles."""
    cfg = job.config["geometry"]
    model, data = frozen_model_and_corpora(job)
    C = len(data.names)
    rng = np.random.default_rng(job.seed)
    ids, labels = data.labelled_windows("test", cfg["windows_per_corpus"], cfg["window"], rng)
    with torch.no_grad():
        _, h = model(ids.to(job.device), inference.uniform_z(len(ids), C, device=job.device))
    activity, corpus = h[:, -1].double().cpu().numpy(), labels.numpy()  # (N, H), (N,)
    measured = corpus_geometry(activity, corpus, C, rng=rng)
    nulls = [corpus_geometry(activity, rng.permutation(corpus), C, rng=rng) for _ in range(cfg["null_draws"])]
    result = {**measured, **{f"{k}_null_shuffle": float(np.nanmean([n[k] for n in nulls])) for k in measured}}
    write_json(
        job.output["metrics"],
        {
            "model": job.wildcards["model"],
            "seed": job.seed,
            "corpora": data.names,
            "window": cfg["window"],
            "n_samples": len(corpus),
            **result,
        },
    )
    return {k: v for k, v in result.items() if np.isfinite(v)}
