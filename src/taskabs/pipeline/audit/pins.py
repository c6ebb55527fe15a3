"""Fetched and gathered files against their pins, with no MLflow run needed (a fresh clone).

A fetched image file (``data/raw/images/<dataset>/<file>``) must match its dataset's pinned SHA-256
(:data:`taskabs.data.sources.DEFAULT_DATASETS`, or the config's ``images.data.datasets``); a
gathered corpus (``data/raw/language/<name>.txt``) must match the SHA-256 that the corpus manifest
next to it records. These pins do not come from the run that wrote the files, so they hold however
the files got there (a fetch, ``dvc pull``, a copy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from taskabs.data.fetch import pin_failure
from taskabs.data.sources import DEFAULT_DATASETS
from taskabs.hashing import sha256_file
from taskabs.pipeline.provenance import SNAKEMAKE_MARKERS

IMAGES_RAW = "data/raw/images"
LANGUAGE_RAW = "data/raw/language"
CORPUS_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PinFailure:
    """A file under ``output`` (the directory output to re-make) whose bytes fail their pin."""

    path: str
    output: str
    detail: str
    repair: str


def _image_pins(root: Path, config: dict) -> list[PinFailure]:
    overrides = ((config.get("images") or {}).get("data") or {}).get("datasets") or {}
    registry = {**DEFAULT_DATASETS, **overrides}
    failures = []
    base = root / IMAGES_RAW
    files = [p for p in base.rglob("*") if p.is_file() and p.name not in SNAKEMAKE_MARKERS]
    for path in sorted(files) if base.is_dir() else []:
        rel = path.relative_to(root).as_posix()
        dataset, name = path.parent.name, path.name
        spec = (registry.get(dataset) or {}).get("files", {}).get(name)
        if path.parent.parent != base or not isinstance(spec, dict):
            failures.append(PinFailure(rel, IMAGES_RAW, f"no pin declares it (dataset {dataset!r})", "fetch"))
            continue
        if (why := pin_failure(path, spec)) is not None:
            failures.append(PinFailure(rel, IMAGES_RAW, f"{why} of dataset {dataset}", "fetch"))
    return failures


def _corpus_pins(root: Path) -> list[PinFailure]:
    base = root / LANGUAGE_RAW
    texts = sorted(base.glob("*.txt")) if base.is_dir() else []
    if not texts:
        return []
    manifest_path = f"{LANGUAGE_RAW}/{CORPUS_MANIFEST}"
    try:
        manifest = json.loads((base / CORPUS_MANIFEST).read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return [PinFailure(manifest_path, LANGUAGE_RAW, "missing: the corpora have no pins", "gather")]
    except (ValueError, UnicodeDecodeError) as error:
        return [PinFailure(manifest_path, LANGUAGE_RAW, f"damaged: {error}", "gather")]
    failures = []
    for text in texts:
        rel = text.relative_to(root).as_posix()
        entry = manifest.get(text.stem)
        pinned = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(pinned, str):
            failures.append(
                PinFailure(rel, LANGUAGE_RAW, f"{manifest_path} records no sha256 for it", "gather")
            )
        elif (actual := sha256_file(text)) != pinned:
            failures.append(
                PinFailure(
                    rel, LANGUAGE_RAW, f"sha256 {actual[:12]} != {pinned[:12]} in {manifest_path}", "gather"
                )
            )
    return failures


def pin_failures(root: Path, config: dict) -> list[PinFailure]:
    """Every fetched or gathered file under ``root`` that fails its pin (an empty list: all hold)."""
    root = Path(root)
    return _image_pins(root, config) + _corpus_pins(root)


def repair_hint(failures: list[PinFailure]) -> str:
    """How to repair: set the directory outputs aside, re-fetch or re-gather them."""
    outputs = " ".join(sorted({f.output for f in failures}))
    verbs = " and ".join(sorted({"re-fetches" if f.repair == "fetch" else "re-gathers" for f in failures}))
    return (
        f"`taskabs verify --repair` sets {outputs} aside and `make reproduce` {verbs} it "
        f"(or `dvc checkout {outputs}` restores the version dvc.lock records)"
    )
