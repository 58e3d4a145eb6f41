"""Session-scoped fixtures: a small simulated shop and a tiny pretrained run on it.

Pretraining once per test session keeps the suite fast; tests that modify a run
copy it first (``tiny_run_copy``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from anomaly_ssl.config_loader import load_config
from anomaly_ssl.data.simulator import simulate_shop
from anomaly_ssl.pretrain import pretrain

#: overrides that make the tiny model learn enough for meaningful scores in a few seconds
TINY_RUN_SETTINGS = ["train.max_steps=120", "train.eval_every=40", "train.checkpoint_every=40", "seed=3"]


@dataclass
class TinyRun:
    """A simulated shop and a run pretrained on it."""

    shop: Path
    events: Path
    labels: Path
    run: Path


@pytest.fixture(scope="session")
def tiny_shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``events.parquet`` + ``labels.parquet`` of 800 simulated sessions (8% anomalous)."""
    out = tmp_path_factory.mktemp("shop")
    simulate_shop(800, anomaly_rate=0.08, seed=11).write(out)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_shop: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """A tiny model pretrained on ``tiny_shop`` with fitted detectors (do not modify: copy it)."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = load_config("tiny", TINY_RUN_SETTINGS)
    pretrain(tiny_shop / "events.parquet", cfg, run)
    return TinyRun(tiny_shop, tiny_shop / "events.parquet", tiny_shop / "labels.parquet", run)


@pytest.fixture
def tiny_run_copy(tiny_run: TinyRun, tmp_path: Path) -> Iterator[TinyRun]:
    """A private copy of the tiny run that a test may change."""
    dest = tmp_path / "run"
    shutil.copytree(tiny_run.run, dest)
    yield TinyRun(tiny_run.shop, tiny_run.events, tiny_run.labels, dest)
