"""The notebooks in ``notebooks/`` run end to end (tiny CI settings) and are committed clean.

Each notebook is executed with nbclient on the ``python3`` kernel (ipykernel of the
running interpreter), from the ``notebooks/`` folder, with environment variables that
make it a seconds-long run and point its working folder at ``tmp_path``.  The tests
check that no cell fails, that the expected files appear in the working folder and
that nothing was written next to the notebooks.  ``02_active_learning`` starts its own
Label Studio server: without the server venv it skips locally and fails when
``CI=true`` (the rule of ``tests/ls_fixtures.py``).  ``03_bring_your_own_data`` runs
once with the shared data (when present) and once pointed at a missing folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from ls_fixtures import require_server_venv
from nbclient import NotebookClient

import active_learning as al

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_quickstart.ipynb", "02_active_learning.ipynb", "03_bring_your_own_data.ipynb"]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

#: seconds a cell may take; the Label Studio cell includes a first server start (~1 min, more on a cold disk)
CELL_TIMEOUT_S = 900
#: what makes every notebook a CI-sized run
CI_ENV = {
    "ANOMALY_SSL_NB_CONFIG": "tiny",
    "ANOMALY_SSL_NB_SESSIONS": "800",
    "ANOMALY_SSL_NO_PROGRESS": "1",
    "ANOMALY_SSL_NB_SET": "",
}


def _execute(name: str, work: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> nbformat.NotebookNode:
    """Run one notebook from ``notebooks/`` with the CI settings; return the executed notebook."""
    for key in [k for k in os.environ if k.startswith("ANOMALY_SSL_NB_")]:
        monkeypatch.delenv(key)  # a developer's own settings must not change the CI run
    for key, value in {**CI_ENV, "ANOMALY_SSL_NB_WORKDIR": str(work), **env}.items():
        monkeypatch.setenv(key, value)  # the kernel process inherits os.environ
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before, "the notebook wrote next to itself"
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook printed (streams and plain-text results)."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out["text"])
            elif "data" in out:
                parts.append(out["data"].get("text/plain", ""))
    return "\n".join(parts)


def _images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def _processes_with_env(entry: str) -> list[int]:
    """Pids of this user's processes whose environment holds ``entry`` (Linux /proc; [] elsewhere)."""
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry.encode() in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
        except OSError:  # another user's process, or it just ended
            continue
    return pids


# --------------------------------------------------------------------- committed form


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.cells[0].cell_type == "markdown"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name} cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{name} cell {i} has an execution count"


def test_notebooks_use_only_the_public_api() -> None:
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        for private in ("from anomaly_ssl.", "from active_learning.", "import anomaly_ssl.", "ass._", "al._"):
            assert private not in source, f"{name} reaches into {private!r}: use the public API"


# --------------------------------------------------------------------- execution


def test_quickstart_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = _execute("01_quickstart.ipynb", tmp_path, monkeypatch)
    report = tmp_path / "report.html"
    assert report.is_file() and report.stat().st_size > 10_000
    assert (tmp_path / "scores.parquet").is_file()
    assert _images(nb) >= 2  # the score histogram and the per-type recall
    text = _text(nb)
    assert "cart_hoarding" in text and "PR-AUC" in text


def test_active_learning_runs_and_stops_its_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = require_server_venv()
    nb = _execute(
        "02_active_learning.ipynb",
        tmp_path,
        monkeypatch,
        ANOMALY_SSL_LS_VENV=str(venv),
        ANOMALY_SSL_NB_ROUNDS="2",
        ANOMALY_SSL_NB_QUERY_N="15",
    )
    text = _text(nb)
    assert "round 2: sent 15, annotated 15" in text
    data_dir = tmp_path / "label-studio"
    assert not (data_dir / "server.json").exists(), "Label Studio was not stopped"
    survivors = _processes_with_env(f"LABEL_STUDIO_BASE_DATA_DIR={data_dir}")
    assert survivors == [], f"Label Studio processes survived: {survivors}"
    labels = al.LabelStore.for_run(tmp_path / "run").current_labels()
    assert labels.height == 30 and set(labels["label"].to_list()) <= {0, 1}
    assert _images(nb) >= 1


@pytest.mark.shared_data
def test_own_data_runs_with_shared_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not present")
    nb = _execute("03_bring_your_own_data.ipynb", tmp_path, monkeypatch, ANOMALY_SSL_NB_MAX_ROWS="1500")
    for produced in ("hdfs_scores.parquet", "taobao_scores.parquet", "own_scores.parquet"):
        assert (tmp_path / produced).is_file(), produced
    text = _text(nb)
    assert "skipped: no shared data" not in text and "PR-AUC" in text


def test_own_data_runs_without_shared_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-shared-data"
    work = tmp_path / "work"
    nb = _execute("03_bring_your_own_data.ipynb", work, monkeypatch, ANOMALY_SSL_NB_SHARED_DATA=str(missing))
    text = _text(nb)
    assert f"shared data not found at {missing}" in text
    assert text.count("skipped: no shared data") == 5
    assert (work / "own_scores.parquet").is_file()
    assert not (work / "hdfs_scores.parquet").exists()
    assert "ConfigError: unknown config key 'data.entity_column'" in text
