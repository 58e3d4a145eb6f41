"""Shared test fixtures: the real-data folder and a writer for small event files."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from ls_fixtures import label_studio_project, label_studio_server  # noqa: F401
from run_fixtures import tiny_run, tiny_run_copy, tiny_shop  # noqa: F401

#: ../shared/data relative to the repository root
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data`` (real public data sets); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not present")
    return SHARED_DATA


def write_table(df: pl.DataFrame, path: Path, *, separator: str = ",", header: bool = True) -> Path:
    """Write ``df`` in the format given by ``path``'s suffixes.

    ``.parquet``; ``.csv``/``.tsv``/``.txt`` (``separator``, ``header``) optionally
    followed by ``.gz``; ``.jsonl``/``.ndjson``.
    """
    suffixes = [s.lower() for s in path.suffixes]
    compressed = suffixes[-1:] == [".gz"]
    kind = suffixes[-2] if compressed else suffixes[-1]
    if kind == ".parquet":
        df.write_parquet(path)
        return path
    if kind in (".jsonl", ".ndjson"):
        data = df.write_ndjson().encode()
    else:
        if kind == ".tsv":
            separator = "\t"
        data = df.write_csv(separator=separator, include_header=header).encode()
    path.write_bytes(gzip.compress(data) if compressed else data)
    return path


@pytest.fixture
def tmp_events(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a small table to a temporary file: ``tmp_events(rows, "name.csv", **kw)``.

    ``rows`` is a polars DataFrame or anything ``pl.DataFrame`` accepts; keyword
    arguments go to :func:`write_table` (``separator``, ``header``).
    """

    def write(rows: Any, name: str = "events.parquet", **kwargs: Any) -> Path:
        df = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows)
        return write_table(df, tmp_path / name, **kwargs)

    return write
