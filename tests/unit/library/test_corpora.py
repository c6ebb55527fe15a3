"""Corpora for the language experiment: gathering, vocabulary, splits, BabyLM fetching.

Everything runs on small files the tests write themselves (the BabyLM zip is served via a
file:// URL); the only exception is the last test, which gathers the real quick-default
corpora from this machine's Debian packages and is skipped, naming the package, when one
is missing.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from taskabs.data import corpora
from taskabs.data.corpora import (
    BABYLM,
    BABYLM_SHA256_KEY,
    BABYLM_URL,
    QUICK_CORPORA,
    QUICK_HELD_OUT,
    QUICK_MAX_CHARS,
    QUICK_TRAIN,
    CharVocab,
    CorpusError,
    babylm_archive,
    babylm_corpora,
    gather_corpus,
    package_version,
    read_corpus,
    split_blocks,
    split_ids,
    spread_order,
    write_corpus,
    write_manifest,
)
from taskabs.data.fetch import DataFetchError
from taskabs.hashing import sha256_bytes

HAVE_DPKG = shutil.which("dpkg-query") is not None


def sha(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def spec_for(*globs: str, **extra) -> dict:
    return {
        "globs": list(globs),
        "package": "taskabs-test-no-such-package",
        "licence": "test",
        "origin": "test files",
        **extra,
    }


# ------------------------------------------------------------------------ gathering
def test_gather_reads_plain_and_gzip_in_sorted_order(tmp_path):
    (tmp_path / "c.txt").write_text("third\n")
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(b"first\n"))
    (tmp_path / "b.txt").write_bytes(gzip.compress(b"second"))  # gzip detected by content
    (tmp_path / "sub").mkdir()  # directories matched by the glob are ignored
    text, prov = gather_corpus("t", spec_for(str(tmp_path / "*")), max_chars=10_000, min_chars=0)
    # Each file is followed by "\n": a blank line where a file already ends with one.
    assert text == "first\n\nsecond\nthird\n\n"
    assert [Path(f["path"]).name for f in prov["files"]] == ["a.txt.gz", "b.txt", "c.txt"]
    assert prov["files_matched"] == 3


def test_normalisation_drops_controls_and_separators_keeps_tabs(tmp_path):
    raw = (
        "\ufeffline one\r\nTab\there\x00\x1b[1m bold\x0c\x7f\x85\r\n%\nsecond entry\n%  \n%%\nlast\n"
    ).encode("utf-8") + b"bad \xff byte\n"
    (tmp_path / "f").write_bytes(raw)
    text, _ = gather_corpus(
        "t", spec_for(str(tmp_path / "f"), separator_lines=["%"]), max_chars=10_000, min_chars=0
    )
    assert text == ("line one\nTab\there[1m bold\nsecond entry\n%%\nlast\nbad \ufffd byte\n\n")
    kept, _ = gather_corpus("t", spec_for(str(tmp_path / "f")), max_chars=10_000, min_chars=0)
    assert "\n%\n" in kept  # without separator_lines, "%" lines stay


def test_symlinks_and_overlapping_globs_are_deduplicated(tmp_path):
    (tmp_path / "b.txt").write_text("B" * 50)
    (tmp_path / "a.txt").symlink_to(tmp_path / "b.txt")
    (tmp_path / "c.skip").write_text("never")
    spec = spec_for(str(tmp_path / "*"), str(tmp_path / "b.txt"), exclude=["*.skip"])
    text, prov = gather_corpus("t", spec, max_chars=10_000, min_chars=0)
    assert text == "B" * 50 + "\n"
    [entry] = prov["files"]
    assert Path(entry["path"]).name == "a.txt"  # first path in sorted order names the file
    assert entry["real_path"] == str((tmp_path / "b.txt").resolve())


def _many_files(root: Path, n: int, size: int, order: list[int] | None = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in order if order is not None else range(n):
        body = (f"file {i:03d} " * size)[: size - 1]
        (root / f"f{i:03d}.txt").write_text(body + "\n")


def test_gather_is_deterministic_and_independent_of_creation_order(tmp_path):
    order = list(range(40))
    random.Random(1).shuffle(order)
    _many_files(tmp_path / "x", 40, 500)
    _many_files(tmp_path / "y", 40, 500, order)
    first = gather_corpus("t", spec_for(str(tmp_path / "x" / "*.txt")), max_chars=3_000, min_chars=0)
    again = gather_corpus("t", spec_for(str(tmp_path / "x" / "*.txt")), max_chars=3_000, min_chars=0)
    other = gather_corpus("t", spec_for(str(tmp_path / "y" / "*.txt")), max_chars=3_000, min_chars=0)
    assert first == again
    assert first[0] == other[0]
    assert first[1]["sha256"] == other[1]["sha256"]


def test_cap_takes_whole_files_spread_evenly_and_is_exact(tmp_path):
    _many_files(tmp_path, 32, 1_000)
    max_chars = 4_000  # default per-file cap 4000 // 16 = 250 characters
    text, prov = gather_corpus("t", spec_for(str(tmp_path / "*.txt")), max_chars=max_chars, min_chars=0)
    assert len(text) == prov["chars"] == max_chars
    assert prov["max_file_chars"] == 250
    used = {int(Path(f["path"]).stem[1:]): f["chars_used"] for f in prov["files"]}
    assert sorted(used) == list(range(0, 32, 2))  # every other file: even coverage
    assert set(used.values()) == {250}
    # The text is the files' beginnings, in sorted order.
    expected = "".join((tmp_path / f"f{i:03d}.txt").read_text()[:n] for i, n in sorted(used.items()))
    assert text == expected


def test_few_files_each_contribute_equally_when_cap_would_starve_the_corpus(tmp_path):
    for name in "abc":
        (tmp_path / name).write_text(name * 9_999 + "\n")
    text, prov = gather_corpus("t", spec_for(str(tmp_path / "*")), max_chars=6_000, min_chars=0)
    assert len(text) == 6_000
    assert [f["chars_used"] for f in prov["files"]] == [2_000, 2_000, 2_000]
    assert text == "a" * 2_000 + "b" * 2_000 + "c" * 2_000


def test_explicit_max_file_chars(tmp_path):
    _many_files(tmp_path, 8, 1_000)
    _, prov = gather_corpus(
        "t", spec_for(str(tmp_path / "*.txt")), max_chars=2_000, min_chars=0, max_file_chars=1_000
    )
    assert [f["chars_used"] for f in prov["files"]] == [1_000, 1_000]
    _, prov = gather_corpus(
        "t", spec_for(str(tmp_path / "*.txt"), max_file_chars=500), max_chars=2_000, min_chars=0
    )
    assert len(prov["files"]) == 4


def test_missing_glob_error_names_corpus_glob_and_package(tmp_path):
    (tmp_path / "present").write_text("x" * 100)
    missing = str(tmp_path / "literature")
    spec = {"globs": [str(tmp_path / "present"), missing], "package": "fortunes"}
    with pytest.raises(CorpusError) as err:
        gather_corpus("prose", spec, max_chars=1_000, min_chars=0)
    message = str(err.value)
    assert "corpus 'prose'" in message
    assert f"no file matches {missing}" in message
    assert "install the Debian package 'fortunes' (make system-deps)" in message
    assert str(tmp_path / "present") not in message.split("(globs")[0]  # only the missing one


def test_package_files_only_needs_a_known_package(tmp_path):
    (tmp_path / "f").write_text("x" * 100)
    spec = spec_for(str(tmp_path / "f"), package_files_only=True)
    with pytest.raises(CorpusError, match="taskabs-test-no-such-package.*package_files_only: false"):
        gather_corpus("t", spec, max_chars=1_000, min_chars=0)


@pytest.mark.skipif(not HAVE_DPKG, reason="dpkg-query not available (not Debian)")
def test_package_files_only_rejects_files_of_no_package(tmp_path):
    (tmp_path / "f").write_text("x" * 100)
    spec = spec_for(str(tmp_path / "f"), package_files_only=True, package="base-files")
    with pytest.raises(CorpusError, match="among the files of base-files"):
        gather_corpus("t", spec, max_chars=1_000, min_chars=0)


def test_too_little_text_names_corpus_and_sizes(tmp_path):
    (tmp_path / "f").write_text("tiny\n")
    with pytest.raises(CorpusError, match=r"corpus 'small': only 6 characters .*min_chars=10000"):
        gather_corpus("small", spec_for(str(tmp_path / "f")), max_chars=50_000)


def test_provenance_hashes_and_versions(tmp_path, monkeypatch):
    (tmp_path / "a.gz").write_bytes(gzip.compress(b"alpha " * 3_000, mtime=0))
    (tmp_path / "b").write_text("beta " * 3_000)
    text, prov = gather_corpus("t", spec_for(str(tmp_path / "*")), max_chars=12_000)
    assert prov["sha256"] == sha(text) and prov["chars"] == len(text) == 12_000
    assert prov["files"][0]["sha256"] == sha256_bytes((tmp_path / "a.gz").read_bytes())  # as stored
    assert prov["files"][1]["sha256"] == sha256_bytes((tmp_path / "b").read_bytes())
    assert sum(f["chars_used"] for f in prov["files"]) == len(text)
    assert prov["package_version"] is None  # unknown package: recorded as null, no failure
    assert {"name", "origin", "licence", "package", "globs"} <= set(prov)
    json.dumps(prov)  # serialisable as it is

    # No dpkg at all: still no failure.
    package_version.cache_clear()

    def no_dpkg(*args, **kwargs):
        raise FileNotFoundError("dpkg-query")

    monkeypatch.setattr(corpora.subprocess, "run", no_dpkg)
    try:
        _, prov = gather_corpus(
            "t", spec_for(str(tmp_path / "*"), package=["base-files", "x"]), max_chars=12_000
        )
        assert prov["package_version"] == {"base-files": None, "x": None}
    finally:
        package_version.cache_clear()


@pytest.mark.skipif(not HAVE_DPKG, reason="dpkg-query not available (not Debian)")
def test_package_version_matches_dpkg():
    expected = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "base-files"], capture_output=True, text=True
    ).stdout
    assert package_version("base-files") == expected != ""


def test_spread_order_is_a_permutation_covering_evenly():
    for n in (1, 2, 3, 7, 16, 100):
        order = spread_order(n)
        assert sorted(order) == list(range(n))
    prefix = spread_order(100)[:10]
    assert max(np.diff(sorted(prefix))) <= 16  # no large gap after ten picks


# ----------------------------------------------------------------------- vocabulary
def test_vocab_orders_by_count_then_code_point_and_is_deterministic():
    texts = ["bbbaaa", "cc", "zzzzz", "y"]
    vocab = CharVocab.build(texts)
    assert vocab.chars == ("z", "a", "b", "c", "y")
    assert vocab.size == 6
    assert CharVocab.build(reversed(texts)) == vocab
    assert CharVocab.build(["".join(random.Random(0).sample("bbbaaacczzzzzy", 14))]) == vocab


def test_vocab_min_count_and_max_size_map_to_unknown():
    vocab = CharVocab.build(["aaaabbbcc d"], min_count=2)
    assert vocab.chars == ("a", "b", "c")  # ' ' and 'd' occur once
    assert vocab.encode("abd").tolist() == [1, 2, 0]
    assert vocab.decode([1, 2, 0]) == "ab\ufffd"
    assert vocab.unknown_rate("abd ") == 0.5
    assert vocab.unknown_rate("") == 0.0
    assert CharVocab.build(["aaaabbbcc d"], max_size=2).chars == ("a", "b")


def test_encode_decode_round_trip_random_strings():
    alphabet = list("abcxyz \n\t%\\\"'") + ["é", "€", "\u2028", "😀", "\ufffd"]
    vocab = CharVocab.build(["".join(alphabet)])
    rng = random.Random(7)
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
        ids = vocab.encode(text)
        assert ids.dtype == np.uint8 and ids.shape == (len(text),)
        assert (ids > 0).all()
        assert vocab.decode(ids) == text
    assert vocab.decode(np.array([], dtype=np.uint8)) == ""


def test_large_vocab_uses_a_wider_dtype():
    chars = "".join(chr(0x4E00 + i) for i in range(300))
    vocab = CharVocab.build([chars], max_size=1_000)
    ids = vocab.encode(chars)
    assert vocab.size == 301 and ids.dtype == np.int32
    assert vocab.decode(ids) == chars
    assert CharVocab.build([chars]).size == 256  # default max_size keeps uint8


def test_decode_rejects_out_of_range_ids():
    vocab = CharVocab.build(["ab"])
    with pytest.raises(ValueError, match="0..2"):
        vocab.decode([3])
    with pytest.raises(ValueError, match="0..2"):
        vocab.decode([-1])


def test_vocab_json_round_trip():
    vocab = CharVocab.build(['hello, wörld\n\t"😀\\'])
    data = json.loads(json.dumps(vocab.to_json()))
    back = CharVocab.from_json(data)
    assert back == vocab
    assert back.encode("wörld").tolist() == vocab.encode("wörld").tolist()
    with pytest.raises(ValueError, match="format"):
        CharVocab.from_json({"chars": ["a"]})
    with pytest.raises(ValueError, match="duplicate"):
        CharVocab.from_json({**data, "chars": ["a", "a"]})


def test_vocab_rejects_bad_arguments():
    with pytest.raises(TypeError):
        CharVocab.build("not a list")
    with pytest.raises(ValueError):
        CharVocab.build(["a"], min_count=0)


# --------------------------------------------------------------------------- splits
FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def test_split_blocks_are_disjoint_cover_and_follow_fractions():
    ids = np.arange(1_003)
    parts = split_ids(ids, block=10, fractions=FRACTIONS, seed=0)
    assert list(parts) == ["train", "validation", "test"]
    assert [len(parts[s]) for s in parts] == [800, 100, 100]
    blocks = {s: parts[s].reshape(-1, 10) for s in parts}
    starts = {s: b[:, 0] for s, b in blocks.items()}
    for b in blocks.values():
        assert (b == b[:, :1] + np.arange(10)).all()  # whole contiguous blocks
        assert (b[:, 0] % 10 == 0).all()
    everything = np.concatenate([starts[s] for s in parts])
    assert sorted(everything.tolist()) == list(range(0, 1_000, 10))  # disjoint, covering
    for s in parts:
        assert (np.diff(starts[s]) > 0).all()  # corpus order within a split
    # Every split samples the whole corpus, not one end of it.
    assert starts["train"].min() < 100 and starts["train"].max() > 900
    assert starts["test"].max() - starts["test"].min() > 300


def test_split_is_seeded():
    ids = np.arange(10_000)
    a = split_ids(ids, block=25, fractions=FRACTIONS, seed=1)
    b = split_ids(ids, block=25, fractions=FRACTIONS, seed=1)
    c = split_ids(ids, block=25, fractions=FRACTIONS, seed=2)
    assert all(np.array_equal(a[s], b[s]) for s in a)
    assert not np.array_equal(a["test"], c["test"])


def test_split_counts_sum_to_blocks_with_awkward_fractions():
    counts = {s: len(v) for s, v in split_blocks(7, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 0).items()}
    assert sum(counts.values()) == 7 and min(counts.values()) == 2


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"fractions": {"train": 0.8, "test": 0.1}}, "sum to 1"),
        ({"fractions": {"train": 1.1, "test": -0.1}}, "must be positive"),
        ({"fractions": {"train": 1.0, "test": 0.0}}, "must be positive"),
        ({"fractions": {}}, "empty"),
        ({"fractions": FRACTIONS, "block": 40}, r"\['validation', 'test'\] get no block: only 2 blocks"),
        ({"fractions": FRACTIONS, "block": 0}, "block must be a positive integer"),
    ],
)
def test_split_errors(kwargs, pattern):
    kwargs = {"block": 10, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        split_ids(np.arange(100), **kwargs)


def test_split_rejects_2d_ids():
    with pytest.raises(ValueError, match="1-D"):
        split_ids(np.zeros((4, 4)), block=2, fractions={"a": 1.0}, seed=0)


# ------------------------------------------------------------------------------ I/O
def test_corpus_and_manifest_files_round_trip(tmp_path):
    text = "line\r\nmixed\rnewlines, ünïcode 😀\n"
    path = write_corpus(tmp_path / "out" / "c.txt", text)
    assert read_corpus(path) == text  # byte for byte, no newline translation
    write_corpus(path, "second")
    assert read_corpus(path) == "second"
    manifest = write_manifest(tmp_path / "manifest.json", {"z": {"b": 1, "a": "é"}, "a": {}})
    raw = manifest.read_text(encoding="utf-8")
    assert raw.index('"a"') < raw.index('"z"') and '"é"' in raw
    assert json.loads(raw) == {"z": {"b": 1, "a": "é"}, "a": {}}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["c.txt", "manifest.json", "out"]


def test_read_corpus_rejects_invalid_utf8(tmp_path):
    (tmp_path / "bad").write_bytes(b"\xff\xfe")
    with pytest.raises(CorpusError, match="bad.*UTF-8"):
        read_corpus(tmp_path / "bad")


# --------------------------------------------------------------------------- BabyLM
DOMAINS = {
    "aochildes": "*CHI: more juice .\n" * 800,
    "cbt": "The cat sat.\r\n" * 1_000,
    "wikipedia": "".join(f"= Article {i} =\nText of article {i}.\n" for i in range(600)),
}


@pytest.fixture
def babylm_zip(tmp_path) -> Path:
    path = tmp_path / "served" / "babylm_data.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("babylm_data/README.md", "# BabyLM\n")
        for domain, text in DOMAINS.items():
            zf.writestr(f"babylm_data/babylm_10M/{domain}.train", text)
            zf.writestr(f"babylm_data/babylm_dev/{domain}.dev", text[:100])
            zf.writestr(f"__MACOSX/babylm_data/babylm_10M/._{domain}.train", b"\x00\x05junk")
    return path


def test_babylm_dataset_has_the_fetch_format():
    assert BABYLM["sources"] == [{"kind": "url", "urls": {"babylm_data.zip": BABYLM_URL}}]
    assert list(BABYLM["files"]) == ["babylm_data.zip"]
    assert BABYLM_URL == "https://github.com/babylm/babylm.github.io/raw/main/babylm_data.zip"


def test_babylm_archive_with_the_right_hash(babylm_zip, tmp_path):
    pin = sha256_bytes(babylm_zip.read_bytes())
    got = babylm_archive(babylm_zip.as_uri(), pin.upper(), tmp_path / "data")
    assert got == tmp_path / "data" / "babylm_data.zip"
    assert got.read_bytes() == babylm_zip.read_bytes()


def test_babylm_archive_with_a_wrong_hash(babylm_zip, tmp_path):
    actual = sha256_bytes(babylm_zip.read_bytes())
    wrong = "0" * 64
    with pytest.raises(DataFetchError) as err:
        babylm_archive(babylm_zip.as_uri(), wrong, tmp_path / "data")
    assert wrong in str(err.value) and actual in str(err.value)
    assert list((tmp_path / "data").iterdir()) == []  # nothing left behind


@pytest.mark.parametrize("pin", [None, "", "abc123"])
def test_babylm_archive_without_a_pin_names_the_config_key(babylm_zip, tmp_path, pin):
    with pytest.raises(CorpusError, match=BABYLM_SHA256_KEY.replace(".", r"\.")):
        babylm_archive(babylm_zip.as_uri(), pin, tmp_path / "data")
    assert not (tmp_path / "data").exists()  # nothing was downloaded


def test_babylm_corpora_extracts_each_domain(babylm_zip):
    found = babylm_corpora(babylm_zip, max_chars=100_000, min_chars=1_000)
    assert list(found) == ["aochildes", "cbt", "wikipedia"]
    text, prov = found["cbt"]
    assert text == "The cat sat.\n" * 1_000  # normalised like the other corpora
    assert prov["member"] == "babylm_data/babylm_10M/cbt.train"
    assert prov["archive_sha256"] == sha256_bytes(babylm_zip.read_bytes())
    assert prov["chars"] == len(text) and prov["sha256"] == sha(text)
    assert prov["licence"] == "see BabyLM README (per-domain licences)"
    assert found["aochildes"][0] == DOMAINS["aochildes"]


def test_babylm_corpora_cap_spreads_windows_over_the_file(babylm_zip):
    found = babylm_corpora(babylm_zip, max_chars=4_000, min_chars=1_000, domains=["wikipedia"])
    text, prov = found["wikipedia"]
    assert list(found) == ["wikipedia"]
    assert len(text) == 4_000 and prov["windows"] == 16
    seen = sorted({int(n) for n in re.findall(r"Article (\d+) =", text)})
    assert seen[0] == 0 and seen[-1] > 550  # from the first to the last sixteenth of the file
    assert max(np.diff(seen)) < 50  # no stretch of the file skipped
    assert text.split("\n")[0] == "= Article 0 ="
    assert all(line[:1] in ("=", "T") for line in text.split("\n"))  # windows start at lines
    assert prov["member_chars"] == len(DOMAINS["wikipedia"])


def test_babylm_corpora_errors(babylm_zip):
    with pytest.raises(
        CorpusError,
        match=r"babylm_data\.zip: no member matches "
        r"babylm_data/babylm_100M/\*\.train.*babylm_data/babylm_10M",
    ):
        babylm_corpora(babylm_zip, split_dir="babylm_data/babylm_100M", max_chars=1_000)
    with pytest.raises(CorpusError, match=r"\['qed'\].*available"):
        babylm_corpora(babylm_zip, max_chars=1_000, min_chars=0, domains=["cbt", "qed"])
    with pytest.raises(CorpusError, match="cannot read as a zip"):
        babylm_corpora(babylm_zip.with_name("missing.zip"), max_chars=1_000)


# --------------------------------------------- the real quick-default corpora (Debian)
def _missing_packages(spec: dict) -> list[str]:
    packages = [spec["package"]] if isinstance(spec["package"], str) else spec["package"]
    if HAVE_DPKG:
        return [p for p in packages if package_version(p) is None]
    import glob

    return packages if not all(glob.glob(g) for g in spec["globs"]) else []


@pytest.mark.parametrize("name", list(QUICK_CORPORA))
def test_quick_default_corpora_on_this_machine(name):
    spec = QUICK_CORPORA[name]
    missing = _missing_packages(spec)
    if missing:
        pytest.skip(f"corpus {name!r} needs the Debian package(s) {', '.join(missing)} (make system-deps)")
    text, prov = gather_corpus(name, spec, max_chars=QUICK_MAX_CHARS)
    print(
        f"{name}: {prov['chars']} chars from {len(prov['files'])} of "
        f"{prov['files_matched']} files, sha256 {prov['sha256'][:12]}"
    )
    assert prov["chars"] >= 100_000
    assert prov["chars"] == len(text) == QUICK_MAX_CHARS  # every quick corpus reaches the cap
    assert "\ufffd" not in text  # all UTF-8 clean
    assert name in QUICK_TRAIN + QUICK_HELD_OUT
    assert os.path.isabs(prov["files"][0]["path"])
