"""Read and write IDX files (the MNIST / Fashion-MNIST container), plain or gzip.

Reading validates the header and payload and raises :class:`IdxFormatError` naming the file and
the problem; gzip is detected from the content, not the name.  Writing is atomic and, for gzip,
byte-reproducible.  The layout is in docs/library.md.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path

import numpy as np

from taskabs.artifacts import atomic_write_bytes

__all__ = [
    "IDX_DTYPES",
    "IdxFormatError",
    "decode_idx",
    "encode_idx",
    "gzip_bytes",
    "read_idx",
    "read_idx_bytes",
    "write_idx",
]

# type code -> big-endian numpy dtype, as in the IDX specification.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(ValueError):
    """A file is not a valid IDX file; the message names the file and the problem."""

    def __init__(self, source: str, problem: str):
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


def read_idx_bytes(path: str | os.PathLike) -> bytes:
    """Return the raw IDX bytes of ``path``, decompressing gzip if the content is gzip.

    A truncated or corrupt gzip stream raises :class:`IdxFormatError`.
    """
    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as err:
        # EOFError: stream cut short; BadGzipFile (an OSError) / zlib.error: corrupt.
        raise IdxFormatError(str(path), f"corrupt or truncated gzip stream ({err})") from err


def decode_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array of native byte order, shape = the header's dims.

    ``source`` only labels error messages.

    >>> decode_idx(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])).tolist()
    [7, 8, 9]
    """
    if len(data) < 4:
        raise IdxFormatError(source, f"only {len(data)} bytes, shorter than the 4-byte magic number")
    if data[0] != 0 or data[1] != 0:
        raise IdxFormatError(source, f"bad magic number {data[:4].hex()}: the first two bytes must be 00 00")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise IdxFormatError(source, f"unknown element type code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise IdxFormatError(source, "header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxFormatError(
            source,
            f"header cut short: {ndim} dimensions need {header_len} header bytes, file has {len(data)}",
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "trailing bytes"
        raise IdxFormatError(
            source,
            f"{what}: dims {dims} of {dtype.name} need {expected} payload bytes, found {actual}",
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # copy: writable, native order


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip) into an array; errors name ``path``."""
    return decode_idx(read_idx_bytes(path), source=str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """Serialise ``array`` (one of the IDX element types, ndim 1..255) to IDX bytes.

    >>> encode_idx(np.array([7, 8, 9], dtype=np.uint8)).hex()
    '0000080100000003070809'
    """
    array = np.asarray(array)
    code = _CODE_OF_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(f"dtype {array.dtype} has no IDX type code")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1..255 dimensions, got {array.ndim}")
    if any(d >= 2**32 for d in array.shape):
        raise ValueError(f"dimension too large for IDX: {array.shape}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def gzip_bytes(data: bytes) -> bytes:
    """Gzip ``data`` reproducibly: mtime 0 and no file name in the header."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", filename="", mtime=0, compresslevel=9) as f:
        f.write(data)
    return buffer.getvalue()


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Atomically write ``array`` as IDX to ``path``; gzip if ``compress`` (default: name ends .gz).

    The bytes go to a temporary file in the same directory, renamed over ``path`` only
    when complete, so a crash never leaves a half-written file under the final name.
    """
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    payload = encode_idx(array)
    if compress:
        payload = gzip_bytes(payload)
    atomic_write_bytes(path, payload)
    return path
