"""Fetched and gathered files are checked against their pins with no MLflow run (a fresh clone)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import yaml

from taskabs.hashing import sha256_bytes
from taskabs.pipeline.audit import pins, verify
from taskabs.pipeline.audit.records import CHECKS, Check

IMAGE = b"\x1f\x8bnot really an IDX file, but pinned as it is"


def project(tmp_path: Path) -> Path:
    """data/raw/images/toy/a.gz pinned by the config, and two corpora with their manifest."""
    config = {"images": {"data": {"datasets": {"toy": {"files": {"a.gz": {"sha256": sha256_bytes(IMAGE)}}}}}}}
    (tmp_path / "config").mkdir(parents=True)
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "data/raw/images/toy").mkdir(parents=True)
    (tmp_path / "data/raw/images/toy/a.gz").write_bytes(IMAGE)
    (tmp_path / "data/raw/images/.snakemake_timestamp").touch()  # Snakemake's directory() marker
    language = tmp_path / "data/raw/language"
    language.mkdir(parents=True)
    manifest = {}
    for name, text in {"prose": "Some prose.\n", "c_headers": "#include <x.h>\n"}.items():
        (language / f"{name}.txt").write_text(text)
        manifest[name] = {"sha256": sha256_bytes(text.encode()), "licence": "test"}
    (language / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def flip(path: Path, at: int = 3) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def config_of(root: Path) -> dict:
    return yaml.safe_load((root / "config/config.yaml").read_text())


def test_intact_files_pass_their_pins(tmp_path):
    root = project(tmp_path)
    assert pins.pin_failures(root, config_of(root)) == []
    assert verify.verify_main(root, [], out=io.StringIO()) == 0


def test_a_flipped_byte_in_a_fetched_file_is_named_with_the_pin_and_the_repair(tmp_path):
    root = project(tmp_path)
    flip(root / "data/raw/images/toy/a.gz")
    [failure] = pins.pin_failures(root, config_of(root))
    assert failure.path == "data/raw/images/toy/a.gz" and failure.output == "data/raw/images"
    assert "matches no pin" in failure.detail and sha256_bytes(IMAGE)[:12] in failure.detail
    out = io.StringIO()
    assert verify.verify_main(root, [], pinned_only=True, out=out) == 1  # no MLflow store here
    text = out.getvalue()
    assert "CORRUPT data/raw/images/toy/a.gz: sha256" in text
    assert "nothing was versioned" in text and "taskabs verify --repair" in text and "re-fetches" in text


def test_a_default_dataset_file_is_checked_against_sources_py(tmp_path):
    folder = tmp_path / "data/raw/images/digits_sklearn"
    folder.mkdir(parents=True)
    (folder / "labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage")
    [failure] = pins.pin_failures(tmp_path, {})
    assert failure.path.endswith("digits_sklearn/labels-idx1-ubyte.gz") and "content_sha256" in failure.detail


def test_an_edited_corpus_or_a_damaged_manifest_fails_and_repair_sets_the_output_aside(tmp_path):
    root = project(tmp_path)
    flip(root / "data/raw/language/prose.txt", at=0)
    [failure] = pins.pin_failures(root, config_of(root))
    assert failure.path == "data/raw/language/prose.txt" and "manifest.json" in failure.detail
    out = io.StringIO()
    assert verify.verify_main(root, [], repair=True, out=out) == 0
    assert "set aside 1 output" in out.getvalue() and not (root / "data/raw/language").exists()

    root = project(tmp_path / "again")
    (root / "data/raw/language/manifest.json").write_text("{ not json")
    assert [f.detail.split(":")[0] for f in pins.pin_failures(root, config_of(root))] == ["damaged"]
    (root / "data/raw/language/manifest.json").unlink()
    assert "missing" in pins.pin_failures(root, config_of(root))[0].detail


def test_an_unpinned_file_among_the_fetched_ones_is_reported(tmp_path):
    root = project(tmp_path)
    (root / "data/raw/images/toy/extra.gz").write_bytes(b"x")
    [failure] = pins.pin_failures(root, config_of(root))
    assert failure.path.endswith("extra.gz") and "no pin declares it" in failure.detail


def test_the_audit_puts_a_pin_failure_in_the_artifact_column():
    skipped = dict.fromkeys(CHECKS, Check(True, "-"))
    rows = [{"file": "data/raw/language/prose.txt", "rule": "gather_corpora", "run_id": "r"} | skipped]
    failure = pins.PinFailure("data/raw/language/prose.txt", "data/raw/language", "sha256 a != b", "gather")
    missing = pins.PinFailure("data/raw/language/manifest.json", "data/raw/language", "missing", "gather")
    from taskabs.pipeline.audit import with_pins

    out = {row["file"]: row for row in with_pins(rows, [failure, missing])}
    assert not out["data/raw/language/prose.txt"]["artifact"].ok
    assert "re-gathers" in out["data/raw/language/prose.txt"]["artifact"].detail
    assert not out["data/raw/language/manifest.json"]["artifact"].ok


def test_the_audit_names_a_failed_pin_even_when_it_cannot_read_the_records(tmp_path):
    from taskabs.pipeline.audit import main

    root = project(tmp_path)  # no Snakefile, no MLflow store: a bare clone's data
    flip(root / "data/raw/language/prose.txt", at=0)
    out = io.StringIO()
    assert main(root, ["config/config.yaml"], out=out) == 2
    assert "MISMATCH data/raw/language/prose.txt [artifact]: fails its pin" in out.getvalue()
