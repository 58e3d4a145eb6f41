"""The active-learning loop of a run: query labels, sync them back.

* :func:`query_labels` picks sequences from the run's latest scores with a
  query strategy, logs them (before anything leaves), pseudonymises entity ids,
  and pushes them as Label Studio tasks with the model's prediction;
* :func:`sync_labels` pulls finished annotations, resolves disagreements and
  appends new labels to the run's append-only label store.

Fine-tuning on the labels lives in :mod:`active_learning.finetune`.  Everything
written goes through atomic writers; every step can be rerun safely (no
duplicate tasks, no lost or doubled labels).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from anomaly_ssl.config import Config
from anomaly_ssl.data import iter_sequence_batches
from anomaly_ssl.errors import DataError, RunDirError
from anomaly_ssl.io import atomic_write_text, atomic_write_with
from anomaly_ssl.pipeline import read_scores_meta
from anomaly_ssl.run import RunDir

from .al_errors import EmptyPoolError, PoolExhaustedError
from .label_store import LabelRecord, LabelStore, utc_now
from .ls_client import LabelStudioClient
from .ls_mapping import (
    build_task,
    parse_export,
    pseudonymize_sequence_id,
    render_label_config,
    resolve_labels,
)
from .query_log import QueryLog, QueryRecord
from .strategies import QueryInputs, make_strategy

log = logging.getLogger(__name__)

#: environment variable that may hold the pseudonymisation key
PSEUDONYM_KEY_ENV = "ANOMALY_SSL_PSEUDONYM_KEY"


# ------------------------------------------------------------------ run files


def queried_path(run: RunDir) -> Path:
    """Features of every queried sequence (what fine-tuning trains on)."""
    return run.labels_dir / "queried.parquet"


def pseudonym_key(run: RunDir, environ: dict[str, str] | None = None) -> str:
    """The run's pseudonymisation key: ``$ANOMALY_SSL_PSEUDONYM_KEY`` or a 0600 file in the run.

    The key never leaves the run directory; without it pseudonyms cannot be reversed.
    """
    import os

    env = os.environ if environ is None else environ
    if env.get(PSEUDONYM_KEY_ENV):
        return env[PSEUDONYM_KEY_ENV]
    path = run.labels_dir / "pseudonym.key"
    if not path.exists():
        run.labels_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


def load_latest_scores(
    run: RunDir, scores_path: str | Path | None = None, embeddings_path: str | Path | None = None
) -> tuple[pl.DataFrame, np.ndarray | None, dict[str, Any]]:
    """The score table to query from, its embeddings (if any) and its metadata."""
    path = Path(scores_path) if scores_path else run.latest_scores_path
    if not path.is_file():
        raise RunDirError(
            f"no scores at {path}; run `anomaly-ssl score --run {run.path} --data DATA` first "
            "(query-labels picks from the most recently scored sequences) or pass --scores"
        )
    scores = pl.read_parquet(path)
    emb_path = (
        Path(embeddings_path)
        if embeddings_path
        else (run.scores_dir / "latest_embeddings.npy" if scores_path is None else None)
    )
    emb = np.load(emb_path) if emb_path is not None and emb_path.is_file() else None
    if emb is not None and len(emb) != scores.height:
        raise DataError(
            f"{emb_path} has {len(emb)} rows but {path} has {scores.height}; rescore to refresh both"
        )
    return scores, emb, read_scores_meta(path)


# --------------------------------------------------------------------- query


@dataclass
class QueryResult:
    """What :func:`query_labels` sent."""

    project_id: int
    project: str
    url: str
    sequence_ids: list[str]
    task_ids: list[int]
    strategy: str
    round: int
    skipped_already_sent: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def _fmt_gap(seconds: float | None) -> str:
    if seconds is None or not np.isfinite(seconds):
        return ""
    s = float(seconds)
    if s < 60:
        return f"{s:.0f}s" if s >= 1 or s == 0 else f"{s:.1f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    if s < 86400:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def _event_rows(row: dict[str, Any], attrs: list[str]) -> list[dict[str, Any]]:
    from anomaly_ssl.explain import _iso

    events = row["event"]
    ts = row.get("ts") or [None] * len(events)
    gaps = row.get("gap") or [None] * len(events)
    out = []
    for i, ev in enumerate(events):
        item: dict[str, Any] = {"pos": i, "time": _iso(ts[i]), "gap": _fmt_gap(gaps[i]), "event": ev}
        for a in attrs:
            vals = row.get(a)
            if vals is not None and vals[i] is not None:
                item[a] = vals[i]
        out.append(item)
    return out


def fetch_sequences(data_path: str | Path, cfg: Config, ids: set[str]) -> pl.DataFrame:
    """The sequences-table rows of ``ids`` from a data file (streamed; memory bounded)."""
    parts = [
        batch.filter(pl.col("sequence_id").is_in(list(ids)))
        for batch in iter_sequence_batches(data_path, cfg.data)
    ]
    found = pl.concat([p for p in parts if p.height]) if any(p.height for p in parts) else None
    if found is None or found.height < len(ids):
        have = set() if found is None else set(found["sequence_id"].to_list())
        missing = sorted(ids - have)[:5]
        raise DataError(
            f"{data_path}: sequences {missing} of the score file are not in the data it names; "
            "rescore the data you want to label"
        )
    return found


def query_labels(
    run_dir: str | Path,
    cfg: Config,
    client: LabelStudioClient,
    n: int | None = None,
    strategy: str | None = None,
    scores_path: str | Path | None = None,
    embeddings_path: str | Path | None = None,
) -> QueryResult:
    """Pick sequences to label and push them to Label Studio.

    Parameters
    ----------
    run_dir : str or Path
    cfg : Config
        The run's config (``query`` and ``label_studio`` sections are used).
    client : LabelStudioClient
    n : int, optional
        How many (default ``cfg.query.n``).
    strategy : str, optional
        ``uncertainty``, ``diverse``, ``topk`` or ``random`` (default ``cfg.query.strategy``).
    scores_path, embeddings_path : optional
        Query from this score file instead of the run's latest scores.

    Raises
    ------
    PoolExhaustedError
        When every scored sequence is already labelled or sent.
    """
    run = RunDir(run_dir)
    n = n or cfg.query.n
    strategy = strategy or cfg.query.strategy
    scores, emb, meta = load_latest_scores(run, scores_path, embeddings_path)
    if scores.height == 0:
        raise EmptyPoolError("the score file is empty: nothing to query")
    if strategy == "diverse" and emb is None:
        raise DataError(
            "--strategy diverse needs the embeddings of the scored sequences: score with "
            "`anomaly-ssl score --run RUN` (keeps scores/latest_embeddings.npy) or pass --embeddings"
        )
    qlog, store = QueryLog.for_run(run.path), LabelStore.for_run(run.path)
    ids = scores["sequence_id"].to_list()
    sent = qlog.already_sent(ids)
    labelled_ids = set(store.current_labels()["sequence_id"].to_list())
    labelled = np.array([i in labelled_ids for i in ids])
    available = np.flatnonzero(~sent & ~labelled)
    if len(available) == 0:
        raise PoolExhaustedError(
            f"all {len(ids)} scored sequences are already labelled or sent to annotators; "
            "score new data or sync the pending labels"
        )
    head = scores["head_proba"].to_numpy() if "head_proba" in scores.columns else None
    has_head = head is not None and not np.isnan(head.astype(float)).all()
    inputs = QueryInputs(
        scores=scores["score"].to_numpy().astype(np.float64),
        threshold=float(meta.get("threshold", scores["threshold"][0])),
        embeddings=emb,
        n_pool=scores.height,
    )
    sampler = make_strategy(strategy, seed=cfg.seed + len(qlog.sent_ids()))
    picked = sampler.query(inputs, available, np.flatnonzero(labelled | sent), n=n)
    round_no = _next_round(qlog)
    chosen = scores[picked]
    table = fetch_sequences(
        meta.get("data") or _data_from_card(run), cfg, set(chosen["sequence_id"].to_list())
    )
    key = pseudonym_key(run) if cfg.query.pseudonymize else None
    records, shown = _task_records(chosen, table, cfg, key)
    _store_queried(run, cfg, chosen, None if emb is None else emb[picked], table, shown)
    utility = sampler.last_scores_
    qlog.append(
        QueryRecord(
            sequence_id=sid,
            strategy=strategy,
            rank=r,
            utility=None if utility is None else float(utility[row]),
            score=float(scores["score"][int(row)]),
            round=round_no,
            model_version=str(meta.get("model_version", "")),
            project=cfg.label_studio.project,
            sent_at=utc_now(),
        )
        for r, (sid, row) in enumerate(zip(chosen["sequence_id"].to_list(), picked))
    )
    project_id = client.get_or_create_project(
        cfg.label_studio.project,
        render_label_config(cfg.label_studio.taxonomy),
        description="anomaly-ssl: is this sequence anomalous?",
    )
    tasks = [
        build_task(rec, str(meta.get("model_version", "unknown")), key, run_id=run.path.name)
        for rec in records
    ]
    task_ids = client.import_tasks(project_id, tasks)
    qlog.attach_tasks(dict(zip(chosen["sequence_id"].to_list(), task_ids)), project=str(project_id))
    log.info(
        "sent %d sequences (%s, round %d) to project %d at %s",
        len(tasks),
        strategy,
        round_no,
        project_id,
        client.url,
    )
    flagged = int(chosen["is_anomaly"].sum()) if "is_anomaly" in chosen.columns else 0
    return QueryResult(
        project_id,
        cfg.label_studio.project,
        client.url,
        chosen["sequence_id"].to_list(),
        task_ids,
        strategy,
        round_no,
        int(sent.sum()),
        {"sent": len(tasks), "model_flagged": flagged, "head": int(has_head)},
    )


def _next_round(qlog: QueryLog) -> int:
    frame = qlog.frame()
    if frame.height == 0 or frame["round"].null_count() == frame.height:
        return 1
    return int(frame["round"].max()) + 1


def _data_from_card(run: RunDir) -> str:
    from anomaly_ssl.io import read_json

    return str(read_json(run.card_path)["data"]["path"])


def _task_records(
    chosen: pl.DataFrame, table: pl.DataFrame, cfg: Config, key: str | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Records for :func:`build_task` and the id each sequence is shown under."""
    attrs = [c for c in (*cfg.data.categorical, *cfg.data.numeric) if c in table.columns]
    by_id = {r["sequence_id"]: r for r in table.iter_rows(named=True)}
    members = [c.removeprefix("contrib_") for c in chosen.columns if c.startswith("contrib_")]
    records, shown = [], []
    for row in chosen.iter_rows(named=True):
        seq = by_id[row["sequence_id"]]
        records.append(
            {
                "sequence_id": row["sequence_id"],
                "entity_id": row["entity_id"],
                "score": row["score"],
                "threshold": row["threshold"],
                "is_anomaly": row["is_anomaly"],
                "events": _event_rows(seq, attrs),
                "top_surprising": [
                    {"pos": t["pos"], "surprise": t["surprise"], "expected": t["expected"]}
                    for t in row.get("top_events") or []
                ],
                "neighbors": row.get("neighbors") or [],
                "detector_contributions": {m: row[f"contrib_{m}"] for m in members},
            }
        )
        sid = row["sequence_id"]
        shown.append(pseudonymize_sequence_id(sid, key, row["entity_id"]) if key else sid)
    return records, shown


def _store_queried(
    run: RunDir,
    cfg: Config,
    chosen: pl.DataFrame,
    emb: np.ndarray | None,
    table: pl.DataFrame,
    shown: list[str],
) -> None:
    """Append the queried sequences' features (embeddings, unsupervised scores, tokens)."""
    cols = {
        "sequence_id": chosen["sequence_id"],
        "shown_id": pl.Series(shown, dtype=pl.Utf8),
        "unsup_score": chosen["unsup_score"],
        **{c: chosen[c] for c in chosen.columns if c.startswith("contrib_")},
        "embedding": pl.Series(
            [None if emb is None else e.tolist() for e in (emb if emb is not None else [None] * len(shown))],
            dtype=pl.List(pl.Float32),
        ),
    }
    new = pl.DataFrame(cols).join(
        table.select(
            "sequence_id",
            "event",
            *[c for c in table.columns if c not in ("sequence_id", "entity_id", "event")],
        ),
        on="sequence_id",
        how="left",
    )
    path = queried_path(run)
    old = pl.read_parquet(path) if path.exists() else None
    merged = (
        new
        if old is None
        else pl.concat([old, new], how="diagonal_relaxed").unique(
            "sequence_id", keep="last", maintain_order=True
        )
    )
    atomic_write_with(path, lambda p: merged.write_parquet(p))


# ---------------------------------------------------------------------- sync


@dataclass
class SyncResult:
    """Counts of what :func:`sync_labels` found and stored."""

    project_id: int
    annotations: int = 0
    cancelled_or_skipped: int = 0
    unsure: int = 0
    resolved_anomaly: int = 0
    resolved_normal: int = 0
    ties: int = 0
    only_unsure: int = 0
    foreign: int = 0
    added: int = 0
    already_stored: int = 0
    unresolved_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def sync_labels(run_dir: str | Path, cfg: Config, client: LabelStudioClient) -> SyncResult:
    """Pull finished annotations into the run's label store (idempotent).

    Skipped/cancelled annotations are ignored, ``unsure`` abstains, and each
    sequence's label is the majority of its annotators; ties stay unresolved and
    are reported.  Running it twice adds nothing the second time.
    """
    from .errors import ProjectNotFound

    run = RunDir(run_dir)
    run.require(hint="pretrain a run first")
    title = cfg.label_studio.project
    project_id = client.find_project(title)
    if project_id is None:
        raise ProjectNotFound(
            f"no Label Studio project titled {title!r} at {client.url}; it was deleted or never created "
            "(run `anomaly-ssl query-labels` to create it). Labels already synced are kept in "
            f"{run.labels_dir / 'labels.jsonl'}"
        )
    export = client.export_annotated(project_id)
    records = parse_export(export, annotators=client.annotators())
    result = SyncResult(project_id)
    result.annotations = len(records)
    result.cancelled_or_skipped = sum(r.was_cancelled for r in records)
    result.unsure = sum(r.choice == "unsure" and not r.was_cancelled for r in records)
    resolved, unresolved = resolve_labels(records)
    real_of = _real_ids(run)
    store = LabelStore.for_run(run.path)
    new: list[LabelRecord] = []
    for shown_id, lab in resolved.items():
        real = real_of.get(shown_id)
        if real is None:
            result.foreign += 1
            continue
        result.resolved_anomaly += lab.label == 1
        result.resolved_normal += lab.label == 0
        new.append(
            LabelRecord(
                sequence_id=real,
                label=int(lab.label),
                anomaly_type=lab.anomaly_type,
                note=" | ".join(n for n in lab.notes if n),
                source=f"label-studio:{project_id}:{','.join(map(str, lab.task_ids))}",
                annotators=list(lab.annotators),
                annotation_ids=[str(a) for a in lab.annotation_ids],
                revision=f"{lab.label}:{lab.anomaly_type}:{sorted(lab.votes.items())}",
                received_at=utc_now(),
            )
        )
    for item in unresolved:
        if item.sequence_id in real_of:
            result.ties += item.reason == "tie"
            result.only_unsure += item.reason == "only_unsure"
            result.unresolved_ids.append(real_of[item.sequence_id])
    result.added = store.append(new)
    result.already_stored = len(new) - result.added
    log.info(
        "synced project %d: %d new labels, %d already stored, %d unresolved",
        project_id,
        result.added,
        result.already_stored,
        len(result.unresolved_ids),
    )
    return result


def _real_ids(run: RunDir) -> dict[str, str]:
    """Shown (possibly pseudonymised) id -> real sequence id, for everything this run sent."""
    path = queried_path(run)
    if not path.exists():
        return {}
    frame = pl.read_parquet(path, columns=["sequence_id", "shown_id"])
    return dict(zip(frame["shown_id"].to_list(), frame["sequence_id"].to_list()))
