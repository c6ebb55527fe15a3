"""IDX reading/writing: round trips, the MNIST header layout, and every malformed case."""

import gzip
import struct

import numpy as np
import pytest

from taskabs.data.idx import IdxFormatError, decode_idx, encode_idx, read_idx, write_idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_round_trip_preserves_values_dtype_and_shape(tmp_path, dtype, name):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = write_idx(tmp_path / name, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\x00\x00")


def test_header_matches_mnist_specification():
    # MNIST images: magic 0x00000803 (uint8, 3 dims), then N, rows, cols big-endian.
    data = encode_idx(np.zeros((2, 28, 28), dtype=np.uint8))
    assert struct.unpack(">IIII", data[:16]) == (0x803, 2, 28, 28)
    assert len(data) == 16 + 2 * 28 * 28
    labels = encode_idx(np.arange(3, dtype=np.uint8))
    assert struct.unpack(">II", labels[:8]) == (0x801, 3)


def test_multibyte_values_are_big_endian():
    data = encode_idx(np.array([1], dtype=np.int32))
    assert data[-4:] == b"\x00\x00\x00\x01"
    assert decode_idx(bytes([0, 0, 0x0C, 1, 0, 0, 0, 1, 0, 0, 1, 0]))[0] == 256


def test_gzip_is_detected_from_content_not_name(tmp_path):
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    (tmp_path / "plain.gz").write_bytes(encode_idx(array))
    (tmp_path / "zipped").write_bytes(gzip.compress(encode_idx(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "zipped"), array)


def test_gzip_output_is_byte_reproducible(tmp_path):
    array = np.arange(100, dtype=np.uint8)
    a = write_idx(tmp_path / "a.gz", array).read_bytes()
    b = write_idx(tmp_path / "b.gz", array).read_bytes()
    assert a == b


GOOD = encode_idx(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"\x00\x00", "shorter than the 4-byte magic"),
        (b"\x01\x00\x08\x01" + GOOD[4:], "bad magic number"),
        (GOOD[:2] + b"\x07" + GOOD[3:], "unknown element type code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (GOOD[:10], "header cut short"),
        (GOOD[:-1], "truncated: dims (3, 4) of uint8 need 12 payload bytes, found 11"),
        (GOOD + b"\x00", "trailing bytes"),
    ],
)
def test_malformed_files_raise_naming_file_and_problem(tmp_path, data, fragment):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(IdxFormatError) as err:
        read_idx(path)
    assert str(path) in str(err.value)
    assert fragment in str(err.value)


def test_truncated_and_corrupt_gzip_raise_idx_error(tmp_path):
    packed = gzip.compress(GOOD)
    truncated = tmp_path / "t.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(IdxFormatError, match="t.gz.*gzip"):
        read_idx(truncated)
    corrupt = tmp_path / "c.gz"
    corrupt.write_bytes(packed[:12] + bytes(b ^ 0xFF for b in packed[12:20]) + packed[20:])
    with pytest.raises(IdxFormatError, match="c.gz"):
        read_idx(corrupt)


def test_write_is_atomic_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "x.idx"
    write_idx(path, np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError):  # int64 has no IDX code: fails before touching disk
        write_idx(path, np.zeros(3, dtype=np.int64))
    assert [p.name for p in tmp_path.iterdir()] == ["x.idx"]
    np.testing.assert_array_equal(read_idx(path), np.zeros(3, dtype=np.uint8))
