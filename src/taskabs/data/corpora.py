"""Text corpora for the language experiment: gather, encode as characters, split, provenance.

:func:`gather_corpus` builds one corpus deterministically from a spec (:data:`QUICK_CORPORA`:
Debian packages) and :func:`babylm_corpora` one per domain of the pinned BabyLM archive, each as
(text, provenance), written with :func:`write_corpus` and :func:`write_manifest`.
:class:`CharVocab` maps characters to ids (0 = unknown) and :func:`split_ids` assigns whole
blocks of ids to splits. This is the data layer only. Corpus choices, normalisation and the
size cap are described in docs/experiments/language.md.
"""

from __future__ import annotations

import glob as globlib
import gzip
import json
import logging
import math
import os
import re
import subprocess
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np

from taskabs.artifacts import atomic_write_bytes
from taskabs.data.fetch import fetch_file
from taskabs.data.sources import (
    BABYLM,
    BABYLM_ARCHIVE,
    BABYLM_LICENCE,
    BABYLM_SHA256_KEY,
    BABYLM_URL,
    QUICK_CORPORA,
    QUICK_HELD_OUT,
    QUICK_MAX_CHARS,
    QUICK_TRAIN,
)
from taskabs.hashing import sha256_bytes, sha256_file

__all__ = [
    "BABYLM",
    "BABYLM_ARCHIVE",
    "BABYLM_SHA256_KEY",
    "BABYLM_URL",
    "QUICK_CORPORA",
    "QUICK_HELD_OUT",
    "QUICK_MAX_CHARS",
    "QUICK_TRAIN",
    "CharVocab",
    "CorpusError",
    "babylm_archive",
    "babylm_corpora",
    "babylm_dataset",
    "gather_corpus",
    "normalise_text",
    "package_version",
    "read_corpus",
    "split_blocks",
    "split_ids",
    "spread_order",
    "write_corpus",
    "write_manifest",
]

log = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
# C0 controls except \t (09) and \n (0a), DEL, C1 controls.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
DEFAULT_FILE_SHARE = 16  # default per-file cap: max_chars // DEFAULT_FILE_SHARE


# ------------------------------------------------------------------------- errors
class CorpusError(RuntimeError):
    """A corpus cannot be built: no matching file, too little text, unpinned archive, ..."""


# ---------------------------------------------------------------------- packages
def _packages(spec: Mapping) -> list[str]:
    package = spec.get("package")
    if package is None:
        return []
    return [package] if isinstance(package, str) else list(package)


def _install_hint(packages: Sequence[str]) -> str:
    if not packages:
        return "check the globs"
    names = ", ".join(f"'{p}'" for p in packages)
    noun = "package" if len(packages) == 1 else "packages"
    return f"install the Debian {noun} {names} (make system-deps)"


@cache
def package_version(package: str) -> str | None:
    """Installed version of a Debian package, or None (no dpkg, not installed, any error)."""
    try:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    version = result.stdout.strip()
    return version if result.returncode == 0 and version else None


@cache
def _package_files(package: str) -> frozenset[str] | None:
    """Paths installed by ``package`` (``dpkg-query -L``); None if unknown."""
    try:
        result = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return frozenset(line.strip() for line in result.stdout.splitlines() if line.strip())


# ------------------------------------------------------------------ file matching
def _match_files(name: str, spec: Mapping) -> list[Path]:
    """Matched regular files, sorted by path, one per real path; every glob must match."""
    globs = spec.get("globs") or []
    globs = [globs] if isinstance(globs, str) else list(globs)
    if not globs:
        raise CorpusError(f"corpus {name!r}: spec has no 'globs'")
    packages = _packages(spec)
    owned: set[str] | None = None
    if spec.get("package_files_only"):
        owned = set()
        for package in packages:
            files = _package_files(package)
            if files is None:
                raise CorpusError(
                    f"corpus {name!r}: 'package_files_only' is set but the files of Debian "
                    f"package {package!r} cannot be listed (dpkg-query -L failed: not "
                    f"installed, or no dpkg); {_install_hint(packages)}, or set "
                    f"package_files_only: false to take every file the globs match"
                )
            owned |= files
    excludes = list(spec.get("exclude") or [])

    def keep(path: str) -> bool:
        if not os.path.isfile(path):
            return False
        if owned is not None and path not in owned:
            return False
        # PurePath.match: '*' stays within one path component; relative patterns match
        # from the right (so "*.dat" excludes every .dat file).
        return not any(PurePosixPath(path).match(pattern) for pattern in excludes)

    matched: set[str] = set()
    unmatched: list[str] = []
    for pattern in globs:
        hits = [p for p in globlib.glob(os.path.expanduser(pattern), recursive=True) if keep(p)]
        if not hits:
            unmatched.append(pattern)
        matched.update(hits)
    if unmatched:
        where = f" among the files of {', '.join(packages)}" if owned is not None else ""
        raise CorpusError(
            f"corpus {name!r}: no file{where} matches {' '.join(unmatched)} "
            f"(globs: {globs}); {_install_hint(packages)}"
        )
    files: list[Path] = []
    seen: set[str] = set()
    for path in sorted(matched):
        real = os.path.realpath(path)
        if real not in seen:  # first path in sorted order names the file
            seen.add(real)
            files.append(Path(path))
    return files


# --------------------------------------------------------------------- normalising
def normalise_text(
    text: str, *, separator_lines: Iterable[str] = (), comment_prefixes: Iterable[str] = ()
) -> str:
    r"""Unify newlines, drop control characters except ``\n``/``\t``, separator and comment lines.

    >>> normalise_text("a\r\nb\x0c\tc\n%\nd", separator_lines=["%"])
    'a\nb\tc\nd'
    >>> normalise_text('.\\" Copyright\n.TH LS 1', comment_prefixes=['.\\"'])
    '.TH LS 1'
    """
    text = text.replace("\r\n", "\n")
    if text.startswith("\ufeff"):
        text = text[1:]
    text = _CONTROL.sub("", text)
    separators, comments = set(separator_lines), tuple(comment_prefixes)
    if separators or comments:
        lines = text.split("\n")
        text = "\n".join(
            line
            for line in lines
            if line.rstrip() not in separators and not (comments and line.startswith(comments))
        )
    return text


def _read_file(path: Path) -> tuple[bytes, str]:
    """Raw bytes of ``path`` and its text (gzip detected from the content, not the name)."""
    raw = path.read_bytes()
    data = raw
    if raw.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise CorpusError(f"{path}: corrupt or truncated gzip stream ({err})") from err
    return raw, data.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------- sampling
def spread_order(n: int) -> list[int]:
    """Indices 0..n-1 in bit-reversal order: every prefix is spread evenly over the range.

    >>> spread_order(8)
    [0, 4, 2, 6, 1, 5, 3, 7]
    >>> spread_order(5)
    [0, 4, 2, 1, 3]
    """
    if n <= 0:
        return []
    bits = max(1, (n - 1).bit_length())
    order = (int(format(i, f"0{bits}b")[::-1], 2) for i in range(1 << bits))
    return [i for i in order if i < n]


def _water_level(lengths: Sequence[int], total: int) -> int:
    """Smallest cap L with sum(min(length, L)) >= total (lengths must sum to >= total)."""
    lo, hi = 0, max(lengths, default=0)
    while lo < hi:
        mid = (lo + hi) // 2
        if sum(min(n, mid) for n in lengths) >= total:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _allocate(lengths: Sequence[int], max_chars: int, max_file_chars: int) -> tuple[list[int], int | None]:
    """Characters taken from the start of each piece, summing to min(total, max_chars);
    also the per-piece cap applied (None when everything fits).

    >>> _allocate([10, 10, 10, 10], 20, 4)   # cap raised to 5 so that 20 is reached
    ([5, 5, 5, 5], 5)
    >>> _allocate([10, 10, 10, 10], 7, 4)    # visiting order 0, 2, 1, 3
    ([4, 0, 3, 0], 4)
    """
    if sum(lengths) <= max_chars:
        return list(lengths), None
    cap = max(max_file_chars, _water_level(lengths, max_chars))
    taken = [0] * len(lengths)
    remaining = max_chars
    for i in spread_order(len(lengths)):
        if remaining == 0:
            break
        taken[i] = min(lengths[i], cap, remaining)
        remaining -= taken[i]
    return taken, cap


# ----------------------------------------------------------------------- gathering
def gather_corpus(
    name: str, spec: Mapping, *, max_chars: int, min_chars: int = 10_000, max_file_chars: int | None = None
) -> tuple[str, dict]:
    """Deterministically build corpus ``name`` from ``spec``; returns (text, provenance).

    ``spec``: ``globs`` (required; each must match a file), ``exclude`` (globs; relative
    ones match from the right, e.g. ``"*.dat"``), ``package`` (Debian package name or list,
    named in errors), ``package_files_only`` (bool: keep only files ``dpkg-query -L`` lists
    for those packages), ``separator_lines`` (lines dropped), ``comment_prefixes`` (lines
    starting with one are dropped), ``max_file_chars``, ``licence``, ``origin``.

    ``max_file_chars`` (keyword, else the spec's, else ``max_chars // 16``) caps one file's
    share; it is raised automatically when the files are too few to reach ``max_chars``
    otherwise (``file_cap_applied`` records the cap used, None if everything fitted).
    The text has exactly ``min(max_chars, available)`` characters; fewer than
    ``min_chars`` raises :class:`CorpusError`.

    Provenance: name, origin, licence, package, package_version (a string or None; a dict
    per package when ``package`` is a list; None whenever dpkg cannot tell), globs, files
    (path, sha256 of the file bytes as stored, chars_used > 0, real_path if a link; in
    corpus order), chars, sha256 of the UTF-8 text, and the settings used.
    """
    if max_chars <= 0:
        raise ValueError(f"corpus {name!r}: max_chars must be positive, got {max_chars}")
    if max_file_chars is None:
        max_file_chars = spec.get("max_file_chars")
    per_file = max(1, max_chars // DEFAULT_FILE_SHARE) if max_file_chars is None else max_file_chars
    if per_file <= 0:
        raise ValueError(f"corpus {name!r}: max_file_chars must be positive, got {per_file}")
    separators = list(spec.get("separator_lines") or [])
    comments = list(spec.get("comment_prefixes") or [])
    paths = _match_files(name, spec)

    pieces: list[tuple[Path, str, str]] = []  # (path, sha256 of bytes, text + "\n")
    for path in paths:
        raw, text = _read_file(path)
        text = normalise_text(text, separator_lines=separators, comment_prefixes=comments)
        if text:
            pieces.append((path, sha256_bytes(raw), text + "\n"))
    taken, cap = _allocate([len(p[2]) for p in pieces], max_chars, per_file)
    chosen = [(p, n) for p, n in zip(pieces, taken, strict=True) if n > 0]
    text = "".join(piece[2][:n] for piece, n in chosen)

    if len(text) < min_chars:
        raise CorpusError(
            f"corpus {name!r}: only {len(text)} characters from {len(pieces)} non-empty files "
            f"({len(paths)} matched by {spec.get('globs')}), fewer than min_chars={min_chars}; "
            f"add files to the globs or lower min_chars"
        )
    packages = _packages(spec)
    package = spec.get("package")
    if isinstance(package, str) or package is None:
        version = package_version(package) if package else None
    else:
        version = {p: package_version(p) for p in packages}
    provenance = {
        "name": name,
        "origin": spec.get("origin"),
        "licence": spec.get("licence"),
        "package": package if isinstance(package, str) or package is None else list(package),
        "package_version": version,
        "globs": [spec["globs"]] if isinstance(spec["globs"], str) else list(spec["globs"]),
        "exclude": list(spec.get("exclude") or []),
        "package_files_only": bool(spec.get("package_files_only", False)),
        "separator_lines": separators,
        "comment_prefixes": comments,
        "max_chars": max_chars,
        "max_file_chars": per_file,
        "file_cap_applied": cap,
        "files_matched": len(paths),
        "files": [_file_entry(piece[0], piece[1], n) for piece, n in chosen],
        "chars": len(text),
        "sha256": sha256_bytes(text.encode("utf-8")),
    }
    return text, provenance


def _file_entry(path: Path, sha256: str, chars_used: int) -> dict:
    entry = {"path": str(path), "sha256": sha256, "chars_used": chars_used}
    real = os.path.realpath(path)
    if real != str(path):  # e.g. common-licenses/GPL -> GPL-3
        entry["real_path"] = real
    return entry


# ---------------------------------------------------------------------- vocabulary
@dataclass(frozen=True)
class CharVocab:
    """Characters <-> integer ids; id 0 is the unknown character, ids 1.. are ``chars``.

    Unknown ids decode to :attr:`UNKNOWN_CHAR` (U+FFFD). :meth:`encode` returns uint8 while
    the vocabulary has at most 256 ids (the default ``max_size=255`` guarantees it).
    """

    chars: tuple[str, ...]
    UNKNOWN_ID: ClassVar[int] = 0
    UNKNOWN_CHAR: ClassVar[str] = "\ufffd"
    FORMAT: ClassVar[str] = "taskabs.char_vocab/1"
    _codes: np.ndarray = field(init=False, repr=False, compare=False)  # sorted code points
    _code_ids: np.ndarray = field(init=False, repr=False, compare=False)  # their ids

    def __post_init__(self) -> None:
        chars = tuple(self.chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"vocabulary entries must be single characters, got {bad[:5]!r}")
        if len(set(chars)) != len(chars):
            dupes = sorted(c for c, k in Counter(chars).items() if k > 1)
            raise ValueError(f"vocabulary has duplicate characters {dupes[:5]!r}")
        codes = np.array([ord(c) for c in chars], dtype=np.uint32)
        order = np.argsort(codes, kind="stable")
        object.__setattr__(self, "chars", chars)
        object.__setattr__(self, "_codes", codes[order])
        object.__setattr__(self, "_code_ids", (order + 1).astype(np.int64))

    @classmethod
    def build(cls, texts: Iterable[str], *, min_count: int = 1, max_size: int = 255) -> CharVocab:
        """Characters seen at least ``min_count`` times, most frequent first (ties by code
        point), at most ``max_size`` of them (not counting the unknown id).

        >>> CharVocab.build(["abracadabra"], min_count=2).chars
        ('a', 'b', 'r')
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if max_size < 0:
            raise ValueError(f"max_size must be >= 0, got {max_size}")
        if isinstance(texts, str):
            raise TypeError("texts must be an iterable of strings, not one string")
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(text)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return cls(tuple(c for c, k in ranked if k >= min_count)[:max_size])

    @property
    def size(self) -> int:
        """Number of ids, including the unknown id 0."""
        return len(self.chars) + 1

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.size <= 256 else np.dtype(np.int32)

    def encode(self, text: str) -> np.ndarray:
        """Ids of the characters of ``text`` (unknown characters -> 0), 1-D."""
        codes = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")
        if codes.size == 0 or self._codes.size == 0:
            return np.zeros(codes.size, dtype=self.dtype)
        pos = np.minimum(np.searchsorted(self._codes, codes), self._codes.size - 1)
        hit = self._codes[pos] == codes
        return np.where(hit, self._code_ids[pos], self.UNKNOWN_ID).astype(self.dtype)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of ``ids``; id 0 becomes U+FFFD. Ids outside 0..size-1 raise ValueError."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return ""
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"decode needs a 1-D integer array, got {ids.dtype} shape {ids.shape}")
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= self.size:
            raise ValueError(f"ids must lie in 0..{self.size - 1}, got range {low}..{high}")
        table = np.array([ord(self.UNKNOWN_CHAR)] + [ord(c) for c in self.chars], dtype="<u4")
        return table[ids].tobytes().decode("utf-32-le", errors="surrogatepass")

    def unknown_rate(self, text: str) -> float:
        """Fraction of the characters of ``text`` outside the vocabulary (0.0 for '')."""
        if not text:
            return 0.0
        return float(np.mean(self.encode(text) == self.UNKNOWN_ID))

    def to_json(self) -> dict:
        return {
            "format": self.FORMAT,
            "unknown_id": self.UNKNOWN_ID,
            "unknown_char": self.UNKNOWN_CHAR,
            "chars": list(self.chars),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> CharVocab:
        if data.get("format") != cls.FORMAT:
            raise ValueError(
                f"not a character vocabulary: format {data.get('format')!r}, expected {cls.FORMAT!r}"
            )
        if data.get("unknown_id", cls.UNKNOWN_ID) != cls.UNKNOWN_ID:
            raise ValueError(f"unknown_id must be {cls.UNKNOWN_ID}, got {data['unknown_id']!r}")
        return cls(tuple(data["chars"]))


# -------------------------------------------------------------------------- splits
def split_blocks(n_blocks: int, fractions: Mapping[str, float], seed: int) -> dict[str, np.ndarray]:
    """Block indices per split, ascending: a seeded permutation cut by ``fractions``.

    Counts are ``floor(fraction * n_blocks)`` plus one for the largest remainders (ties in
    the order given), so they sum to ``n_blocks``.
    """
    if not fractions:
        raise ValueError("fractions is empty: name at least one split")
    for split, fraction in fractions.items():
        if not (math.isfinite(fraction) and fraction > 0):
            raise ValueError(f"fraction of split {split!r} must be positive, got {fraction}")
    total = math.fsum(fractions.values())
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"fractions must sum to 1, got {total!r} ({dict(fractions)})")
    names = list(fractions)
    exact = [fractions[s] * n_blocks for s in names]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(names)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n_blocks - sum(counts)]:
        counts[i] += 1
    empty = [s for s, k in zip(names, counts, strict=True) if k == 0]
    if empty:
        raise ValueError(
            f"split(s) {empty} get no block: only {n_blocks} blocks for fractions "
            f"{dict(fractions)}; use a smaller block or a longer corpus"
        )
    permutation = np.random.default_rng(seed).permutation(n_blocks)
    bounds = np.cumsum([0] + counts)
    return {s: np.sort(permutation[bounds[i] : bounds[i + 1]]) for i, s in enumerate(names)}


def split_ids(
    ids: np.ndarray, *, block: int, fractions: Mapping[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Cut ``ids`` into contiguous blocks of ``block`` (ragged tail dropped), assign whole
    blocks to splits (:func:`split_blocks`) and concatenate each split's blocks in order.

    >>> parts = split_ids(np.arange(10), block=2, fractions={"a": 0.6, "b": 0.4}, seed=0)
    >>> sorted(np.concatenate(list(parts.values())).tolist())
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {ids.shape}")
    if not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be a positive integer, got {block!r}")
    n_blocks = ids.size // block
    blocks = ids[: n_blocks * block].reshape(n_blocks, block)
    return {s: blocks[index].reshape(-1) for s, index in split_blocks(n_blocks, fractions, seed).items()}


# ---------------------------------------------------------------------------- I/O
def write_corpus(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` as UTF-8 (bytes exactly as given, no newline translation)."""
    path = Path(path)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def read_corpus(path: str | os.PathLike) -> str:
    """Text written by :func:`write_corpus`, byte for byte (strict UTF-8)."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not valid UTF-8 ({err})") from err


def write_manifest(path: str | os.PathLike, provenance_by_corpus: Mapping[str, Mapping]) -> Path:
    """Atomically write the provenance of each corpus as JSON with sorted keys."""
    path = Path(path)
    payload = json.dumps(provenance_by_corpus, sort_keys=True, indent=2, ensure_ascii=False)
    atomic_write_bytes(path, (payload + "\n").encode("utf-8"))
    return path


# -------------------------------------------------------------------------- BabyLM
def _check_pin(sha256: str | None) -> str:
    if not sha256:
        raise CorpusError(
            f"{BABYLM_SHA256_KEY} is not set: the BabyLM archive is not pinned. Download it "
            f"once ({BABYLM_URL}), verify it (sha256sum {BABYLM_ARCHIVE}, compared with a "
            f"trusted source), and set {BABYLM_SHA256_KEY} to that digest"
        )
    pin = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", pin):
        raise CorpusError(f"{BABYLM_SHA256_KEY} must be a 64-digit hex SHA-256, got {sha256!r}")
    return pin


def babylm_dataset(sha256: str | None, url: str = BABYLM_URL) -> dict:
    """:data:`BABYLM` with the archive pinned to ``sha256`` (for :func:`fetch_dataset`)."""
    pin = _check_pin(sha256)
    return {
        "files": {BABYLM_ARCHIVE: {"sha256": pin}},
        "sources": [{"kind": "url", "urls": {BABYLM_ARCHIVE: url}}],
    }


def babylm_archive(
    url: str, sha256: str | None, dest_dir: str | os.PathLike, *, timeout: float = 600.0
) -> Path:
    """``dest_dir/babylm_data.zip``, downloaded from ``url`` and verified against ``sha256``.

    Unset ``sha256`` raises :class:`CorpusError` naming the config key; a mismatch raises
    :class:`~taskabs.data.fetch.DataFetchError` with the expected and actual hashes.
    """
    if not url:
        raise CorpusError(f"language.data.babylm.url is empty (the canonical one is {BABYLM_URL})")
    dataset = babylm_dataset(sha256, url)
    return fetch_file(
        BABYLM_ARCHIVE, dataset["files"][BABYLM_ARCHIVE], dataset["sources"], dest_dir, timeout=timeout
    )


def _spread_windows(text: str, max_chars: int, windows: int) -> tuple[str, int]:
    """At most ``max_chars`` characters of one long text: ``windows`` stretches taken from
    evenly spaced segments (each starting at a line start where possible), joined by ``\\n``.
    Returns (text, number of windows)."""
    if len(text) <= max_chars:
        return text, 1
    k = max(1, min(windows, (max_chars + 1) // 2))  # each window >= 1 char plus its "\n"
    budget = max_chars - (k - 1)
    sizes = [budget // k + (1 if i < budget % k else 0) for i in range(k)]
    segment = len(text) / k
    parts = []
    for i, size in enumerate(sizes):
        start, end = int(i * segment), int((i + 1) * segment)
        newline = text.find("\n", start, max(start, end - size))
        if i > 0 and newline != -1:
            start = newline + 1
        parts.append(text[start : start + size])
    return "\n".join(parts), k


def babylm_corpora(
    archive: str | os.PathLike,
    *,
    split_dir: str = "babylm_data/babylm_10M",
    suffix: str = ".train",
    max_chars: int,
    min_chars: int = 10_000,
    domains: Sequence[str] | None = None,
    windows: int = 16,
) -> dict[str, tuple[str, dict]]:
    """One corpus per BabyLM domain file ``<split_dir>/<domain><suffix>`` in the zip.

    Returns ``{domain: (text, provenance)}`` sorted by domain. Texts are normalised like
    :func:`gather_corpus`; a domain longer than ``max_chars`` is reduced to ``windows``
    evenly spaced stretches (so a cap does not keep only the first documents).
    """
    archive = Path(archive)
    if max_chars <= 0:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    prefix = split_dir.strip("/") + "/"
    try:
        with zipfile.ZipFile(archive) as zf:
            members = sorted(
                m
                for m in zf.namelist()
                if m.startswith(prefix)
                and m.endswith(suffix)
                and "/" not in m[len(prefix) :]
                and not m[len(prefix) :].startswith(".")
            )
            if not members:
                tops = sorted(
                    {m.split("/")[0] + "/" + m.split("/")[1] for m in zf.namelist() if m.count("/") >= 2}
                )[:10]
                raise CorpusError(
                    f"{archive}: no member matches {prefix}*{suffix} (expected directory "
                    f"{prefix}; directories found: {tops or 'none'})"
                )
            found = {m[len(prefix) : -len(suffix)] if suffix else m[len(prefix) :]: m for m in members}
            if domains is not None:
                missing = [d for d in domains if d not in found]
                if missing:
                    raise CorpusError(
                        f"{archive}: no {prefix}<domain>{suffix} for domains "
                        f"{missing} (available: {sorted(found)})"
                    )
                found = {d: found[d] for d in domains}
            raw = {d: zf.read(m) for d, m in found.items()}
    except (zipfile.BadZipFile, OSError) as err:
        raise CorpusError(f"{archive}: cannot read as a zip archive ({err})") from err
    archive_sha256 = sha256_file(archive)
    corpora: dict[str, tuple[str, dict]] = {}
    for domain in sorted(raw):
        full = normalise_text(raw[domain].decode("utf-8", errors="replace"))
        text, used_windows = _spread_windows(full, max_chars, windows)
        if len(text) < min_chars:
            raise CorpusError(
                f"BabyLM domain {domain!r} ({found[domain]} in {archive}): only "
                f"{len(text)} characters, fewer than min_chars={min_chars}"
            )
        corpora[domain] = (
            text,
            {
                "name": domain,
                "origin": f"BabyLM {found[domain]}",
                "licence": BABYLM_LICENCE,
                "package": None,
                "package_version": None,
                "archive": archive.name,
                "archive_sha256": archive_sha256,
                "member": found[domain],
                "member_chars": len(full),
                "windows": used_windows,
                "max_chars": max_chars,
                "files": [
                    {"path": found[domain], "sha256": sha256_bytes(raw[domain]), "chars_used": len(text)}
                ],
                "chars": len(text),
                "sha256": sha256_bytes(text.encode("utf-8")),
            },
        )
    return corpora
