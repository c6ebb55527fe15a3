"""A corrupt resume checkpoint is named, set aside, and training restarts; a corrupt model is an
error naming the file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from taskabs.artifacts import CorruptArtifact, load_checkpoint, save_checkpoint


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_bit_flipped_resume_checkpoint_is_set_aside_and_training_restarts(tmp_path, caplog):
    path = tmp_path / "checkpoints" / "seq" / "seed0.pt"
    save_checkpoint({"step": 5, "config_hash": "h"}, path)
    assert load_checkpoint(path)["step"] == 5
    flip(path)  # one bit: torch.load alone would not notice
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(path) == {}  # train.py then starts from step 0
    assert not path.exists()
    [moved] = list(path.parent.glob("seed0.pt.corrupt-*"))
    assert str(path) in caplog.text and str(moved) in caplog.text
    save_checkpoint({"step": 1, "config_hash": "h"}, path)  # the next checkpoint is good again
    assert load_checkpoint(path)["step"] == 1


def test_a_truncated_resume_checkpoint_is_set_aside(tmp_path):
    path = tmp_path / "checkpoints" / "x.pt"
    save_checkpoint({"step": 5}, path)
    path.write_bytes(path.read_bytes()[:40])
    assert load_checkpoint(path) == {} and not path.exists()


def test_a_corrupt_model_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "results" / "model.pt"
    save_checkpoint({"step": 5}, path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CorruptArtifact, match=str(path)):
        load_checkpoint(path)
