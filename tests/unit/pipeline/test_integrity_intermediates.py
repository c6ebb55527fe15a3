"""A deleted intermediate: what was made from it is set aside, so that the next run re-makes both."""

from __future__ import annotations

from pathlib import Path

from taskabs.pipeline.audit import index_outputs
from taskabs.pipeline.audit.records import RunRecord
from taskabs.pipeline.audit.verify import missing_intermediates


def job(
    run_id: str, start: int, inputs: list[str], outputs: list[str], status: str = "FINISHED"
) -> RunRecord:
    tags = {f"output.o{i}.path": p for i, p in enumerate(outputs)}
    tags |= {f"input.i{i}.path": p for i, p in enumerate(inputs)} | {
        f"input.i{i}.md5": "x" for i in range(len(inputs))
    }
    return RunRecord(run_id, status, start, tags)


def chain(tmp_path: Path) -> list[RunRecord]:
    """data -> model -> evaluation -> table; every file on disk."""
    for name in ("data/d.npz", "results/model.pt", "results/eval.json", "results/table.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    return [
        job("gen", 1, [], ["data/d.npz"]),
        job("train", 2, ["data/d.npz"], ["results/model.pt"]),
        job("eval", 3, ["results/model.pt"], ["results/eval.json"]),
        job("table", 4, ["results/eval.json"], ["results/table.csv"]),
    ]


def test_nothing_is_reported_while_every_file_is_there(tmp_path):
    assert missing_intermediates(tmp_path, index_outputs(chain(tmp_path))) == []


def test_everything_made_from_a_deleted_model_is_named_transitively(tmp_path):
    runs = chain(tmp_path)
    (tmp_path / "results/model.pt").unlink()
    found = missing_intermediates(tmp_path, index_outputs(runs))
    assert [(f.label, f.path) for f in found] == [
        ("MISSING", "results/model.pt"),
        ("STALE", "results/eval.json"),
        ("STALE", "results/table.csv"),
    ]
    assert all(f.output == f.path for f in found)  # each set aside by itself


def test_a_missing_final_result_or_one_only_an_old_run_read_is_left_to_snakemake(tmp_path):
    runs = chain(tmp_path)
    (tmp_path / "results/table.csv").unlink()  # a target: Snakemake re-makes it by itself
    assert missing_intermediates(tmp_path, index_outputs(runs)) == []
    (tmp_path / "results/table.csv").write_text("t")
    # the table is now made from another file; the old evaluation is read by no current run
    newer = job("table2", 5, ["results/other.json"], ["results/table.csv"])
    (tmp_path / "results/eval.json").unlink()
    assert missing_intermediates(tmp_path, index_outputs([*runs, newer])) == []
