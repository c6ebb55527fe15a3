"""Datasets: IDX file format, pinned-hash fetching and array preparation."""
