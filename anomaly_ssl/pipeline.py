"""End-to-end scoring of a run: fit detectors after pretraining, score any data file.

``score_file`` streams: it reads the input in batches of sequences, encodes them
with the run's vocabulary, runs the model, scores and explains each batch and
appends it to the output parquet, so memory stays bounded by one batch (plus
the optional embeddings file).  The output is written to a temporary file and
renamed at the end, so an interrupted run never leaves a half-written score
file.  A fine-tuned head (active learning) plugs in through :class:`Rescorer`
without this module knowing about it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from .config import Config
from .config_loader import load_config
from .data import Vocabulary, iter_sequence_batches
from .data.encoded import EVENT_FIELD, EncodedSequences
from .device import resolve_device
from .errors import DataError
from .evaluate import CONTRIB_PREFIX
from .explain import event_names, explanation_columns, neighbor_column, summarize_events
from .io import atomic_path
from .logs import progress
from .run import RunDir
from .scoring import ScoreBatch, SequenceScorer

log = logging.getLogger(__name__)

#: parquet key-value metadata key holding the score file's JSON description
SCORES_META_KEY = b"anomaly_ssl"


class Rescorer(Protocol):
    """Turns unsupervised scores into final scores (e.g. a fine-tuned head's blend)."""

    model_version: str
    threshold: float
    threshold_source: str

    def rescore(
        self, embeddings: np.ndarray, unsup_score: np.ndarray, contributions: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(head_proba, final_score)``, float64 arrays of shape (n,)."""
        ...


@dataclass
class LoadedRun:
    """A run directory's model, vocabulary, config and fitted detectors."""

    run: RunDir
    cfg: Config
    vocab: Vocabulary
    scorer: SequenceScorer
    train: pl.DataFrame = field(repr=False)


def load_run(run_dir: str | Path, overrides: Sequence[str] = (), device: str | None = None) -> LoadedRun:
    """Load a trained run (model, vocabulary, detectors) for scoring.

    Parameters
    ----------
    run_dir : str or Path
    overrides : sequence of str
        ``key=value`` config overrides on top of the run's saved config.
    device : str, optional
        Defaults to the config's ``device``.
    """
    from .pretrain import load_model

    run = RunDir(run_dir)
    cfg = load_config(None, overrides, base=run.read_config_dict())
    dev = resolve_device(device or cfg.device)
    model, vocab, _ = load_model(run.path, dev)
    scorer = SequenceScorer.load(run, model, cfg, dev)
    train = pl.read_parquet(run.detector_dir / "train.parquet", columns=["sequence_id", "events"])
    return LoadedRun(run, cfg, vocab, scorer, train)


def fit_run_detectors(
    run_dir: str | Path,
    model: Any,
    vocab: Vocabulary,
    cfg: Config,
    encoded: EncodedSequences,
    table: pl.DataFrame,
    holdout: np.ndarray | None = None,
    device: Any = None,
) -> SequenceScorer:
    """Embed the training pool, fit every detector and save them into the run.

    Parameters
    ----------
    encoded : EncodedSequences
        The whole unlabelled pool, in the row order of ``table``.
    table : polars.DataFrame
        The pool's sequences table (for ids and summaries of neighbours).
    holdout : ndarray of bool, optional
        Sequences held out from pretraining (threshold calibration).
    """
    run = RunDir(run_dir)
    scorer = SequenceScorer(model, vocab.sizes()[EVENT_FIELD], cfg, device).fit(encoded, holdout=holdout)
    train_table = pl.DataFrame(
        {
            "sequence_id": table["sequence_id"],
            "entity_id": table["entity_id"],
            "n_events": table["event"].list.len().cast(pl.Int32),
            "events": [summarize_events(e) for e in table["event"].to_list()],
            "is_holdout": holdout if holdout is not None else np.zeros(len(table), dtype=bool),
        }
    )
    scorer.save(run, train_table)
    return scorer


def score_table(
    loaded: LoadedRun,
    table: pl.DataFrame,
    rescorer: Rescorer | None = None,
    explain: bool = True,
) -> tuple[pl.DataFrame, np.ndarray]:
    """Score one sequences table (in memory).

    Returns
    -------
    scores : polars.DataFrame
        One row per sequence (columns: see :func:`score_file`).
    embeddings : ndarray of float32, shape (n, d)
    """
    cfg, scorer = loaded.cfg, loaded.scorer
    encoded = loaded.vocab.encode(table)
    feats = scorer.features(encoded)
    batch: ScoreBatch = scorer.score_features(feats)
    unsup = batch.score
    head_proba = np.full(len(table), np.nan)
    final, flags = unsup, batch.is_anomaly
    version, threshold = scorer.model_version, scorer.threshold_
    if rescorer is not None:
        head_proba, final = rescorer.rescore(feats.embeddings, unsup, batch.contributions)
        version, threshold = rescorer.model_version, rescorer.threshold
        flags = (final > threshold).astype(np.int8)
    cols: dict[str, Any] = {
        "sequence_id": table["sequence_id"],
        "entity_id": table["entity_id"],
        "score": pl.Series(final, dtype=pl.Float64),
        "is_anomaly": pl.Series(flags, dtype=pl.Int8),
        "threshold": pl.Series(np.full(len(table), threshold), dtype=pl.Float64),
        "unsup_score": pl.Series(unsup, dtype=pl.Float64),
        "head_proba": pl.Series(head_proba, dtype=pl.Float64, nan_to_null=True),
        "n_events": table["event"].list.len().cast(pl.Int32),
    }
    for name in batch.raw:
        cols[f"score_{name}"] = pl.Series(batch.raw[name], dtype=pl.Float64)
        cols[f"{CONTRIB_PREFIX}{name}"] = pl.Series(batch.contributions[name], dtype=pl.Float64)
    out = pl.DataFrame(cols)
    if explain:
        attrs = [c for c in (*cfg.data.categorical, *cfg.data.numeric) if c in table.columns]
        top, summary = explanation_columns(
            table,
            feats.surprise.per_event,
            feats.surprise.offsets,
            feats.surprise.eos_nll,
            feats.surprise.expected,
            event_names(loaded.vocab),
            attrs,
            cfg.detect.explain_topk,
        )
        if feats.first is not None and feats.inverse is not None and len(feats.first) < len(feats):
            # identical sequences have identical neighbours: search once per distinct one
            dist, rows = scorer.nearest_normal(feats.embeddings[feats.first], cfg.detect.explain_neighbors)
            dist, rows = dist[feats.inverse], rows[feats.inverse]
        else:
            dist, rows = scorer.nearest_normal(feats.embeddings, cfg.detect.explain_neighbors)
        ids = loaded.train["sequence_id"]
        sums = loaded.train["events"]
        out = out.with_columns(top, summary, neighbor_column(dist, rows, ids, sums))
    out = out.with_columns(pl.lit(version, dtype=pl.Utf8).alias("model_version"))
    return out, feats.embeddings


@dataclass
class ScoreSummary:
    """What :func:`score_file` did."""

    out_path: Path
    n_sequences: int
    n_flagged: int
    threshold: float
    threshold_source: str
    model_version: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out_path),
            "sequences": self.n_sequences,
            "flagged": self.n_flagged,
            "flagged_share": self.n_flagged / max(self.n_sequences, 1),
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "model_version": self.model_version,
            "seconds": round(self.seconds, 2),
            "sequences_per_s": round(self.n_sequences / max(self.seconds, 1e-9), 1),
        }


def score_file(
    loaded: LoadedRun,
    data_path: str | Path,
    out_path: str | Path,
    rescorer: Rescorer | None = None,
    batch_rows: int = 50_000,
    explain: bool = True,
    save_latest: bool = True,
    embeddings_path: str | Path | None = None,
) -> ScoreSummary:
    """Score every sequence of a data file and write a parquet of scores.

    Columns: ``sequence_id, entity_id, score, is_anomaly, threshold, unsup_score,
    head_proba, n_events``, ``score_<member>`` and ``contrib_<member>`` per
    detector, and with ``explain``: ``top_events`` (most surprising events with
    time, attributes and the event the model expected), ``events`` (a compact
    rendering) and ``neighbors`` (nearest normal training sequences).  The
    file's metadata (key ``anomaly_ssl``) records threshold, its source, the
    members and the model version.

    Parameters
    ----------
    loaded : LoadedRun
        From :func:`load_run`.
    data_path, out_path : str or Path
    rescorer : Rescorer, optional
        A fine-tuned head blended into the final score.
    batch_rows : int
        Sequences per batch (memory bound).
    explain : bool
        Add the explanation columns.
    save_latest : bool
        Also keep a copy as the run's ``scores/latest.parquet`` with its embeddings
        (what ``query-labels`` and ``report`` read).
    embeddings_path : str or Path, optional
        Where to write the embeddings (float32 ``.npy`` aligned with the rows).
    """
    started = time.perf_counter()
    cfg, scorer, run = loaded.cfg, loaded.scorer, loaded.run
    out_path = Path(out_path)
    threshold = rescorer.threshold if rescorer else scorer.threshold_
    meta = {
        "threshold": threshold,
        "threshold_source": rescorer.threshold_source if rescorer else scorer.threshold_source_,
        "members": list(cfg.detect.members),
        "normalize": cfg.detect.normalize,
        "combine": cfg.detect.combine,
        "model_version": rescorer.model_version if rescorer else scorer.model_version,
        "unsup_model_version": scorer.model_version,
        "data": str(data_path),
        "run": str(run.path),
    }
    n_total = n_flagged = 0
    emb_raw = out_path.with_name(f".{out_path.name}.emb.tmp")
    writer: pq.ParquetWriter | None = None
    bar = progress(desc="scoring", unit="seq")
    try:
        with atomic_path(out_path) as tmp, open(emb_raw, "wb") as emb_fh:
            d = 0
            for table in iter_sequence_batches(data_path, cfg.data, batch_rows=batch_rows):
                scores, emb = score_table(loaded, table, rescorer, explain)
                arrow = scores.to_arrow()
                if writer is None:
                    schema = arrow.schema.with_metadata({SCORES_META_KEY: json.dumps(meta).encode()})
                    writer = pq.ParquetWriter(tmp, schema)
                writer.write_table(arrow.cast(writer.schema))
                emb_fh.write(np.ascontiguousarray(emb, dtype=np.float32).tobytes())
                d = emb.shape[1]
                n_total += len(scores)
                n_flagged += int(scores["is_anomaly"].sum())
                bar.update(len(scores))
                bar.set_postfix(flagged=n_flagged)
            if writer is None:
                raise DataError(f"{data_path}: no sequences to score")
            writer.close()
            writer = None
        targets = [Path(embeddings_path)] if embeddings_path else []
        if save_latest:
            targets.append(run.scores_dir / "latest_embeddings.npy")
        for target in targets:
            _raw_to_npy(emb_raw, target, n_total, d)
        if save_latest:
            run.scores_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(run.latest_scores_path) as tmp:
                tmp.write_bytes(out_path.read_bytes())
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        emb_raw.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    log.info(
        "scored %d sequences in %.1fs (%.0f/s), %d flagged -> %s",
        n_total,
        seconds,
        n_total / max(seconds, 1e-9),
        n_flagged,
        out_path,
    )
    return ScoreSummary(
        out_path,
        n_total,
        n_flagged,
        float(threshold),
        str(meta["threshold_source"]),
        str(meta["model_version"]),
        seconds,
    )


def _raw_to_npy(raw: Path, target: Path, n: int, d: int) -> None:
    """Turn a raw float32 file of ``n`` rows into a ``.npy`` (streamed, atomic)."""
    src = np.memmap(raw, dtype=np.float32, mode="r", shape=(n, d)) if n * d else np.zeros((n, d), np.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
        step = 100_000
        for start in range(0, n, step):
            dst[start : start + step] = src[start : start + step]
        dst.flush()
        del dst


def read_scores_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a score file (``{}`` when absent)."""
    from .evaluate import _scores_meta

    return _scores_meta(Path(path))


__all__ = [
    "LoadedRun",
    "Rescorer",
    "ScoreSummary",
    "fit_run_detectors",
    "load_run",
    "read_scores_meta",
    "score_file",
    "score_table",
]
