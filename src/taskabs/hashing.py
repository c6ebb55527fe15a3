"""Content hashes: SHA-256 for pins and MLflow records, MD5 because that is what DVC records."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def md5_file(path: str | os.PathLike) -> str:
    """The hash DVC records for a file, so the two can be compared."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def canonical_json(obj: Any) -> str:
    """Sorted keys, no spaces: equal objects give equal text whatever their key order."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict) -> str:
    """SHA-256 of the canonical JSON of a resolved config."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()
