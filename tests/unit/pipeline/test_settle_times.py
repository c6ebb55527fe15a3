"""`taskabs settle-times`: one modification time for everything DVC wrote, so Snakemake re-runs nothing."""

import os

from taskabs.pipeline.cli import main, settle_times


def test_every_file_and_directory_gets_one_time_and_links_are_left_alone(tmp_path):
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / ".snakemake_timestamp").write_text("")  # a directory output's time
    (tmp_path / "data" / "a.npz").write_bytes(b"x")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "model.pt").write_bytes(b"y")
    os.utime(tmp_path / "results" / "model.pt", (1, 1))
    outside = tmp_path / "outside.txt"
    outside.write_text("z")
    os.utime(outside, (5, 5))
    (tmp_path / "results" / "link").symlink_to(outside)
    count = settle_times([tmp_path / "data", tmp_path / "results", tmp_path / "logs"], when=1000.0)
    assert count == 6  # data, data/raw, its timestamp, data/a.npz, results, results/model.pt
    for path in (
        "data",
        "data/raw",
        "data/raw/.snakemake_timestamp",
        "data/a.npz",
        "results",
        "results/model.pt",
    ):
        assert os.stat(tmp_path / path).st_mtime == 1000.0, path
    assert os.stat(outside).st_mtime == 5  # the link's target is not under the settled paths


def test_command_line(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert main(["settle-times", str(tmp_path)]) == 0
    assert "settled the times of 2 files" in capsys.readouterr().out
