"""A simulated annotator that answers Label Studio tasks from ground truth.

Used by the demo, the label-efficiency benchmark and the integration tests.  It
is clearly a simulation: it annotates through the real Label Studio API exactly
as a person's submissions would arrive (one annotation per task), but its
answers come from a label file, not from judgement.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from anomaly_ssl.run import RunDir

from .loop import queried_path
from .ls_client import LabelStudioClient
from .ls_mapping import annotation_result

log = logging.getLogger(__name__)

#: how the simulated annotator is named in logs, notes and reports
ORACLE_NAME = "simulated annotator (answers from the simulator's ground truth)"


def answer_pending(
    run_dir: str | Path,
    client: LabelStudioClient,
    project_id: int,
    truth: Mapping[str, tuple[int, str | None]],
    note: str = "simulated annotator",
) -> int:
    """Annotate every task of ``project_id`` this run sent that has no annotation yet.

    Parameters
    ----------
    run_dir : str or Path
        The run that sent the tasks (maps shown/pseudonymised ids back to real ones).
    client : LabelStudioClient
    project_id : int
    truth : mapping of sequence id to (label, anomaly type)
        Ground truth; tasks of sequences missing from it are answered ``unsure``.
    note : str
        Text stored in each annotation's note.

    Returns
    -------
    int
        Annotations created.
    """
    run = RunDir(run_dir)
    path = queried_path(run)
    if not path.exists():
        return 0
    frame = pl.read_parquet(path, columns=["sequence_id", "shown_id"])
    real_of = dict(zip(frame["shown_id"].to_list(), frame["sequence_id"].to_list()))
    existing = client.existing_tasks(project_id)
    done = 0
    for key, tasks in existing.items():
        shown = key.split("/", 1)[-1]
        real = real_of.get(shown)
        if real is None:
            continue
        for task_id, n_annotations in tasks:
            if n_annotations:
                continue
            label, kind = truth.get(real, (None, None))
            if label is None:
                result = annotation_result("unsure", note=note)
            elif label == 1:
                result = annotation_result("anomaly", kind or "other", note=note)
            else:
                result = annotation_result("normal", note=note)
            client.create_annotation(task_id, result)
            done += 1
    log.info("%s answered %d tasks", ORACLE_NAME, done)
    return done


def truth_from_labels(
    path: str | Path, taxonomy: list[str] | None = None
) -> dict[str, tuple[int, str | None]]:
    """Ground truth from a ``sequence_id,label[,anomaly_type]`` file (types outside the taxonomy -> other)."""
    from anomaly_ssl.data import read_labels

    labels = read_labels(path)
    out: dict[str, tuple[int, str | None]] = {}
    for sid, lab, kind in labels.select("sequence_id", "label", "anomaly_type").iter_rows():
        if lab == 1 and taxonomy is not None and kind not in taxonomy:
            kind = "other"
        out[str(sid)] = (int(lab), kind if lab == 1 else None)
    return out
