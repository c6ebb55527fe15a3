"""The language model, GBI over corpora, recomposition and corpus geometry, on tiny models and texts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from taskabs import inference
from taskabs.data.corpora import CharVocab
from taskabs.experiments.language import stages as language
from taskabs.geometry import all_conditions
from taskabs.models.language import CharModelConfig, CorpusConditionedCharLSTM
from taskabs.train import train as run_training

# Two "corpora" over one 4-character vocabulary (ids 1..4; 0 is unknown) that differ only in their
# transitions: in A each character is followed by the next (1 2 3 4 1 ...), in B by the previous.
# Their unigram statistics are identical, so telling them apart needs the conditional model.
VOCAB = 5


def corpus_windows(kind: int, n: int, width: int, rng: np.random.Generator) -> torch.Tensor:
    start = rng.integers(0, 4, size=n)[:, None]
    step = 1 if kind == 0 else -1
    return torch.from_numpy((start + step * np.arange(width)[None, :]) % 4 + 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> CorpusConditionedCharLSTM:
    """A tiny GBI-LSTM trained with the true corpus as z (about 2 s on one CPU core)."""
    torch.manual_seed(0)
    model = CorpusConditionedCharLSTM(CharModelConfig(vocab_size=VOCAB, n_tasks=2, embedding=4, hidden=16))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)

    def step_loss(net, step):
        rng = np.random.default_rng(step)
        ids = torch.cat([corpus_windows(0, 16, 12, rng), corpus_windows(1, 16, 12, rng)])
        z = torch.nn.functional.one_hot(torch.arange(32) // 16, 2).float()
        return net.loss_per_example(ids, z).mean(), {}

    run_training(
        model,
        optimiser,
        step_loss,
        steps=150,
        checkpoint_path=tmp_path_factory.mktemp("lm") / "c.pt",
        checkpoint_every=1000,
        resolved_config={},
    )
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def test_model_is_causal_and_shapes_match():
    torch.manual_seed(0)
    model = CorpusConditionedCharLSTM(CharModelConfig(vocab_size=VOCAB, n_tasks=3, embedding=4, hidden=8))
    ids = torch.randint(0, VOCAB, (2, 10))
    logits, h = model(ids, inference.uniform_z(2, 3))
    assert logits.shape == (2, 10, VOCAB) and h.shape == (2, 10, 8)
    assert model.loss_per_example(ids, inference.uniform_z(2, 3)).shape == (2,)
    changed = ids.clone()
    changed[:, 6] = (changed[:, 6] + 1) % VOCAB
    later, _ = model(changed, inference.uniform_z(2, 3))
    # position t predicts character t from characters < t: logits up to 6 ignore character 6
    torch.testing.assert_close(later[:, :7], logits[:, :7])
    assert not torch.allclose(later[:, 7:], logits[:, 7:])


def test_every_inference_mode_finds_the_corpus(trained):
    rng = np.random.default_rng(1)
    ids = torch.cat([corpus_windows(0, 20, 8, rng), corpus_windows(1, 20, 8, rng)])
    truth = torch.arange(40) // 20

    def loss_fn(z):
        return trained.loss_per_example(ids, z)

    one_step = inference.one_step(loss_fn, 40, 2).argmin(1)
    iterative = inference.iterative(loss_fn, 40, 2, steps=10, lr=1.0).z.argmax(1)
    exhaustive = inference.exhaustive(loss_fn, 40, 2).argmin(1)
    for name, prediction in {"one_step": one_step, "iterative": iterative, "exhaustive": exhaustive}.items():
        assert (prediction == truth).float().mean() >= 0.95, name


def test_shared_z_fitted_on_one_corpus_moves_towards_it_and_lowers_its_loss(trained):
    rng = np.random.default_rng(2)
    adapt, evaluate = corpus_windows(1, 8, 12, rng), corpus_windows(1, 8, 12, rng)
    z = language.fit_shared_z(trained, adapt, steps=30, lr=0.1, simplex=False)
    mixture = language.fit_shared_z(trained, adapt, steps=30, lr=0.5, simplex=True)
    assert z[1] > z[0] and mixture[1] > 0.9
    before = trained.loss_per_example(evaluate, inference.uniform_z(8, 2)).mean()
    after = trained.loss_per_example(evaluate, z.expand(8, -1)).mean()
    true_corpus = trained.loss_per_example(evaluate, torch.eye(2)[[1] * 8]).mean()
    assert after < 0.95 * before and after < true_corpus + 0.02  # as good as being told the corpus


def test_task_input_is_informative_only_for_the_gbi_lstm():
    labels = torch.tensor([0, 2, 1])
    assert torch.equal(language.task_input("gbi_lstm", labels, 3), torch.eye(3)[[0, 2, 1]])
    assert torch.allclose(language.task_input("lstm", labels, 3), torch.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="unknown language model 'gpt'"):
        language.task_input("gpt", labels, 3)


def test_corpus_geometry_separates_a_factorised_code_from_a_random_one():
    rng = np.random.default_rng(0)
    corpus = np.repeat(np.arange(4), 30)
    bits = all_conditions(2)[corpus].astype(float)  # (N, 2): corpus index as two binary factors
    factorised = bits @ rng.normal(size=(2, 20)) + 0.05 * rng.normal(size=(120, 20))
    random = rng.normal(size=(4, 20))[corpus] + 0.05 * rng.normal(size=(120, 20))
    good = language.corpus_geometry(factorised, corpus, 4, rng=rng)
    bad = language.corpus_geometry(random, corpus, 4, rng=rng)
    assert good["ps_max"] > 0.95 and good["ccgp"] > 0.95
    assert bad["ccgp"] < good["ccgp"] and bad["ps_max"] < good["ps_max"]
    odd = language.corpus_geometry(factorised[corpus < 3], corpus[corpus < 3], 3, rng=rng)
    assert np.isnan(odd["ccgp"]) and np.isnan(odd["ps_mean"])  # no balanced dichotomy pairs 3 corpora


def test_windows_refuse_a_split_shorter_than_the_window(tmp_path):
    np.savez(tmp_path / "c.npz", **{"test/tiny": np.arange(1, 9, dtype=np.uint8) % 4 + 1})
    (tmp_path / "v.json").write_text(
        json.dumps({**CharVocab.build(["abcd"]).to_json(), "corpora": ["tiny"], "held_out": []})
    )
    data = language.Corpora(tmp_path / "c.npz", tmp_path / "v.json")
    assert data.windows("test", "tiny", 3, 4, np.random.default_rng(0)).shape == (3, 4)
    with pytest.raises(ValueError, match="corpus 'tiny' test split has 8 characters; windows need > 8"):
        data.windows("test", "tiny", 3, 8, np.random.default_rng(0))


def test_gather_and_prepare_stages_on_small_files(tmp_path):
    """Corpora from files the test writes: manifest roles, vocabulary from training text only, splits."""
    from taskabs.pipeline.jobs import Job

    rng = np.random.default_rng(0)
    specs = {}
    for name, alphabet in {"abc": "abc \n", "xyz": "xyz \n", "held": "abcxyz#\n"}.items():
        folder = tmp_path / "src" / name
        folder.mkdir(parents=True)
        for i in range(3):
            (folder / f"{i}.txt").write_text("".join(rng.choice(list(alphabet), size=6000)))
        specs[name] = {
            "globs": [str(folder / "*.txt")],
            "licence": "CC0-1.0",
            "origin": f"test corpus {name}",
        }
    data = {
        "source": "debian",
        "corpora": ["abc", "xyz"],
        "held_out": ["held"],
        "custom_corpora": specs,
        "max_chars": 12000,
        "min_count": 1,
        "block": 500,
        "seed": 0,
        "fractions": {"train": 0.8, "validation": 0.1, "test": 0.1},
    }
    raw = tmp_path / "raw"
    language.gather(Job("gather_corpora", {}, {"raw": raw}, {"data": data}))
    manifest = json.loads((raw / "manifest.json").read_text())
    assert {n: m["role"] for n, m in manifest.items()} == {"abc": "train", "xyz": "train", "held": "held_out"}
    assert all(m["chars"] == 12000 and m["licence"] == "CC0-1.0" for m in manifest.values())

    out = {"corpora": tmp_path / "p" / "corpora.npz", "vocab": tmp_path / "p" / "vocab.json"}
    metrics = language.prepare(Job("prepare_corpora", {"raw": raw}, out, {"data": data}))
    prepared = language.Corpora(out["corpora"], out["vocab"])
    assert prepared.names == ["abc", "xyz"] and prepared.held_out == ["held"]
    assert set(prepared.vocab.chars) == set("abcxyz \n")  # '#' occurs only in the held-out corpus
    assert metrics["unknown_rate_held"] > 0.1 and metrics["unknown_rate_abc"] == 0
    sizes = {part: len(prepared.ids(part, "abc")) for part in ("train", "validation", "test")}
    assert (
        sum(sizes.values()) == 12000 and sizes["train"] == 19 * 500
    )  # 24 blocks: 19 train, 5 shared by validation and test
    assert len(prepared.ids("adapt", "held")) + len(prepared.ids("evaluate", "held")) == 12000
    assert prepared.vocab.decode(prepared.ids("train", "abc")[:50]).strip("abc \n") == ""
