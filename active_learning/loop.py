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

import contextlib
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from anomaly_ssl.config import Config
from anomaly_ssl.data import iter_sequence_batches
from anomaly_ssl.errors import DataError, RunDirError
from anomaly_ssl.evaluate import contribution_members
from anomaly_ssl.io import atomic_write_with, read_json
from anomaly_ssl.pipeline import read_scores_meta
from anomaly_ssl.run import RunDir

from .al_errors import EmptyPoolError, PoolExhaustedError, QueryLogError
from .label_store import AppendOnlyJsonl, LabelRecord, LabelStore, utc_now
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
    env = os.environ if environ is None else environ
    if env.get(PSEUDONYM_KEY_ENV):
        return env[PSEUDONYM_KEY_ENV]
    path = run.labels_dir / "pseudonym.key"
    if not path.exists():
        _create_secret(path, secrets.token_hex(32))
    return path.read_text(encoding="utf-8").strip()


def _create_secret(path: Path, value: str) -> None:
    """Create ``path`` holding ``value``, mode 0600 from the start; keep a file that already exists.

    Written to a private temporary file (mkstemp: 0600), fsynced and hard-linked
    into place, so the key is never readable by others, never half-written, and
    two concurrent first queries cannot end up with different keys.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # no hard links on this file system: rename (mode is kept)
            if not path.exists():
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


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
    """What :func:`query_labels` sent.

    ``sequence_ids``/``task_ids``: the sequences pushed again (owed from an
    earlier, incomplete push) first, then the new picks.  ``counts``: ``sent``,
    ``new``, ``resent``, ``model_flagged`` (of the sent) and ``head`` (1 when the
    scores came from a fine-tuned head).
    """

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
    """A time gap for people: ``0.5s``, ``42s``, ``3m``, ``1.5h``, ``2.0d`` (empty when unknown).

    Each unit is used only while the rounded value stays below the next unit
    (59.7 s is ``1m``, not ``60s``).
    """
    if seconds is None or not np.isfinite(seconds):
        return ""
    s = float(seconds)
    if abs(s) < 0.95 and s != 0:
        return f"{s:.1f}s"
    if abs(s) < 59.5:
        return f"{s:.0f}s"
    if abs(s) < 59.5 * 60:
        return f"{s / 60:.0f}m"
    if abs(s) < 23.95 * 3600:
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

    The project is found (or created) first, so an unreachable server or a
    rejected key fails before anything is logged.  Sequences an earlier run
    logged as sent but whose push never completed (no task id in the query log,
    e.g. a timeout mid-push) or whose project was deleted since are pushed again
    first and count towards ``n``; task keys make that push idempotent, so
    nothing is duplicated or lost.

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
        When every scored sequence is already labelled or sent (and nothing is owed).
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
    labelled_ids = set(store.current_labels()["sequence_id"].to_list())
    project_id = client.get_or_create_project(
        cfg.label_studio.project,
        render_label_config(cfg.label_studio.taxonomy),
        description="anomaly-ssl: is this sequence anomalous?",
    )
    resend = _owed_rows(qlog, client, project_id, labelled_ids, ids)
    sent = qlog.already_sent(ids)
    labelled = np.array([i in labelled_ids for i in ids], dtype=bool)
    available = np.flatnonzero(~sent & ~labelled)
    if len(available) == 0 and len(resend) == 0:
        raise PoolExhaustedError(
            f"all {len(ids)} scored sequences are already labelled or sent to annotators; "
            "score new data or sync the pending labels"
        )
    n_new = min(max(0, n - len(resend)), len(available))
    picked, utility = np.zeros(0, dtype=np.int64), None
    if n_new:
        inputs = query_inputs(run, scores, emb, meta)
        params = {"candidate_factor": cfg.query.candidate_factor} if strategy == "diverse" else {}
        sampler = make_strategy(strategy, seed=cfg.seed + len(qlog.sent_ids()), **params)
        picked = sampler.query(inputs, available, np.flatnonzero(labelled | sent), n=n_new)
        utility = sampler.last_scores_
    rows = np.concatenate([resend, picked]).astype(np.int64)
    round_no = _next_round(qlog)
    chosen = scores[rows]
    chosen_ids = chosen["sequence_id"].to_list()
    table = fetch_sequences(meta.get("data") or _data_from_card(run), cfg, set(chosen_ids))
    key = pseudonym_key(run) if cfg.query.pseudonymize else None
    records, shown = _task_records(chosen, table, cfg, key)
    _store_queried(run, cfg, chosen, None if emb is None else emb[rows], table, shown)
    # logged before the push: a crash in between leaves entries without a task id,
    # which the next query pushes again (idempotently) instead of losing them
    qlog.append(
        QueryRecord(
            sequence_id=ids[int(row)],
            strategy=strategy,
            rank=r,
            utility=None if utility is None else float(utility[row]),
            score=float(scores["score"][int(row)]),
            round=round_no,
            model_version=str(meta.get("model_version", "")),
            project=cfg.label_studio.project,
            sent_at=utc_now(),
        )
        for r, row in enumerate(picked)
    )
    tasks = [
        build_task(rec, str(meta.get("model_version", "unknown")), key, run_id=run.path.name)
        for rec in records
    ]
    task_ids = client.import_tasks(project_id, tasks)
    qlog.attach_tasks(dict(zip(chosen_ids, task_ids)), project=str(project_id))
    log.info(
        "sent %d sequences (%d new, %s, round %d; %d owed from earlier pushes) to project %d at %s",
        len(tasks),
        len(picked),
        strategy,
        round_no,
        len(resend),
        project_id,
        client.url,
    )
    flagged = int(chosen["is_anomaly"].sum()) if "is_anomaly" in chosen.columns else 0
    head = scores["head_proba"].to_numpy() if "head_proba" in scores.columns else None
    has_head = head is not None and not np.isnan(head.astype(float)).all()
    counts = {"sent": len(tasks), "new": len(picked), "resent": len(resend)}
    counts.update(model_flagged=flagged, head=int(has_head))
    return QueryResult(
        project_id,
        cfg.label_studio.project,
        client.url,
        chosen_ids,
        task_ids,
        strategy,
        round_no if len(picked) else round_no - 1,
        int(sent.sum()),
        counts,
    )


def query_inputs(
    run: RunDir, scores: pl.DataFrame, emb: np.ndarray | None, meta: dict[str, Any]
) -> QueryInputs:
    """What the query strategies see: final scores, the head's probabilities, boundaries, embeddings."""
    probas = head_probas(scores)
    return QueryInputs(
        scores=scores["score"].to_numpy().astype(np.float64),
        threshold=query_boundary(run, scores, meta),
        probas=probas,
        proba_threshold=0.5 if probas is None else query_boundary(run, scores, meta, "head_proba", 0.5),
        embeddings=emb,
        n_pool=scores.height,
    )


def head_probas(scores: pl.DataFrame) -> np.ndarray | None:
    """The fine-tuned head's P(anomaly) per row (``head_proba``), or ``None`` before fine-tuning.

    Uncertainty sampling (and ``diverse``, built on it) asks about the rows the
    *head* is least sure of; the final score may blend the unsupervised rank in
    (``finetune.blend``), which would move the boundary away from what the head
    still has to learn.  ``topk`` keeps ranking by the final score.
    """
    if "head_proba" not in scores.columns or scores["head_proba"].null_count() > 0:
        return None
    return np.clip(scores["head_proba"].to_numpy().astype(np.float64), 0.0, 1.0)


def query_boundary(
    run: RunDir,
    scores: pl.DataFrame,
    meta: dict[str, Any],
    column: str = "score",
    default: float | None = None,
) -> float:
    """The value of ``column`` that uncertainty sampling treats as the decision boundary.

    Before fine-tuning: the detector's threshold.  After: the quantile of the
    fine-tuned ``column`` (the final ``score`` or the head's ``head_proba``) that
    flags as large a share of these sequences as the unsupervised threshold
    does.  The head's own threshold is cross-validated on the labels, which
    query strategies chose and which hold far more anomalies than the pool; as a
    boundary for the *pool* it drifts (and, measured on the simulated shop,
    makes the next labels less useful).  Where that share cannot be had (no
    detector threshold, or it flags nothing or everything): ``default``, else
    the score file's threshold.
    """
    threshold = float(meta.get("threshold", scores["threshold"][0])) if default is None else default
    has_head = "head_proba" in scores.columns and scores["head_proba"].null_count() < scores.height
    detector_json = run.detector_dir / "detector.json"
    if not has_head or "unsup_score" not in scores.columns or not detector_json.is_file():
        return threshold
    unsup_threshold = float(read_json(detector_json)["threshold"])
    share = float((scores["unsup_score"].to_numpy() > unsup_threshold).mean())
    if not 0.0 < share < 1.0:
        return threshold
    boundary = float(np.quantile(scores[column].to_numpy().astype(np.float64), 1.0 - share))
    log.info("query boundary %s %.4f: flags the unsupervised share %.2f%%", column, boundary, 100 * share)
    return boundary


def _owed_rows(
    qlog: QueryLog, client: LabelStudioClient, project_id: int, labelled: set[str], ids: list[str]
) -> np.ndarray:
    """Score-file rows of sequences logged as sent that no live task holds (push them again).

    That is: no task id was attached (the push failed or crashed), or the task's
    project is gone (deleted since; the current one replaces it).  Labelled
    sequences are never owed.  Owed sequences missing from the score file are
    reported and stay owed until it holds them again.
    """
    frame = qlog.frame()
    if frame.height == 0:
        return np.zeros(0, dtype=np.int64)
    project_of: dict[str, str | None] = {}
    for obj in AppendOnlyJsonl(qlog.path, QueryLogError).read():
        if obj.get("event") == "task":
            project_of[str(obj["sequence_id"])] = obj.get("project")
    open_ids = [s for s in frame["sequence_id"].to_list() if s not in labelled]
    elsewhere = {project_of.get(s) for s in open_ids} - {None, str(project_id)}
    gone = {p for p in elsewhere if str(p).isdigit() and not client.project_exists(int(str(p)))}
    no_task = set(frame.filter(pl.col("task_id").is_null())["sequence_id"].to_list())
    owed = [s for s in open_ids if s in no_task or project_of.get(s) in gone]
    row_of = {s: i for i, s in enumerate(ids)}
    missing = [s for s in owed if s not in row_of]
    if missing:
        log.warning(
            "%d sequences logged as sent have no task in Label Studio and are not in this score file "
            "(first: %s); rescore the data they came from to send them again",
            len(missing),
            missing[0],
        )
    if owed:
        log.info("pushing %d sequences again whose earlier push did not complete", len(owed) - len(missing))
    return np.asarray([row_of[s] for s in owed if s in row_of], dtype=np.int64)


def _next_round(qlog: QueryLog) -> int:
    frame = qlog.frame()
    if frame.height == 0 or frame["round"].null_count() == frame.height:
        return 1
    return int(frame["round"].max()) + 1


def _data_from_card(run: RunDir) -> str:
    return str(read_json(run.card_path)["data"]["path"])


def _task_records(
    chosen: pl.DataFrame, table: pl.DataFrame, cfg: Config, key: str | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Records for :func:`build_task` and the id each sequence is shown under."""
    attrs = [c for c in (*cfg.data.categorical, *cfg.data.numeric) if c in table.columns]
    by_id = {r["sequence_id"]: r for r in table.iter_rows(named=True)}
    members = contribution_members(chosen.columns)
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
    # cancelled (skipped) annotations are parsed only to be counted; resolve_labels ignores them
    records = parse_export(export, annotators=client.annotators(), include_cancelled=True)
    result = SyncResult(project_id)
    result.cancelled_or_skipped = sum(r.was_cancelled for r in records)
    result.annotations = len(records) - result.cancelled_or_skipped
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
