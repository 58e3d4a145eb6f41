"""Sessionisation: cut each entity's time-ordered event stream into sequences.

The rule (shared by the data layer and the shop simulator, whose labels must
name exactly these ids):

* events of one entity are ordered by time, ties kept in file order;
* a new session starts where the gap to the previous event is **strictly
  greater** than ``gap_seconds`` (a gap exactly at the boundary stays in the
  session);
* a session reaching ``max_events`` events is cut, the rest starts a new one;
* sessions are numbered ``0, 1, 2, ...`` per entity in time order and get the
  id ``f"{entity}:{k}"``.

With an explicit session column the sessions are taken from it instead (id =
the session value, ``f"{session}.{part}"`` for the 2nd, 3rd ... part when a
session is cut at ``max_events``).
"""

from __future__ import annotations

import polars as pl

#: name of the row-order column the readers add, used to keep ties in file order
ROW_COL = "__row"
#: name of the sequence id column
SEQUENCE_ID = "sequence_id"
#: name of the position-within-sequence column added here
POS_COL = "__pos"


def session_ids_expr(
    entity_col: str,
    time_col: str,
    gap_seconds: float,
    max_events: int,
) -> tuple[list[pl.Expr], pl.Expr]:
    """Expressions computing session numbers on a frame sorted by entity, time, row.

    Returns
    -------
    (helpers, sequence_id)
        ``helpers`` are ``with_columns`` steps to apply first (in order);
        ``sequence_id`` builds the final id column.
    """
    ent = pl.col(entity_col)
    new_entity = ent.ne_missing(ent.shift(1)).fill_null(True)
    gap = pl.col(time_col) - pl.col(time_col).shift(1)
    gap_break = (gap > gap_seconds).fill_null(False) & ~new_entity
    # first pass: gap-based sessions, numbered globally
    step1 = (new_entity | gap_break).cast(pl.Int64).cum_sum().alias("__gapsess")
    # position inside the gap session, then cut every max_events
    step2 = pl.int_range(pl.len()).over("__gapsess").alias("__inpos")
    step3 = (pl.col("__inpos") // max_events).alias("__part")
    # a new session starts at each entity change, gap break or length cut
    starts = new_entity | gap_break | ((pl.col("__inpos") > 0) & (pl.col("__inpos") % max_events == 0))
    step4 = starts.cast(pl.Int64).alias("__start")
    step5 = (pl.col("__start").cum_sum().over(entity_col) - 1).alias("__k")
    sequence_id = pl.concat_str([ent.cast(pl.Utf8), pl.lit(":"), pl.col("__k").cast(pl.Utf8)]).alias(
        SEQUENCE_ID
    )
    return [step1, step2, step3, step4, step5], sequence_id


def sessionize(
    frame: pl.LazyFrame,
    entity_col: str,
    time_col: str,
    gap_seconds: float,
    max_events: int,
    session_col: str | None = None,
) -> pl.LazyFrame:
    """Add ``sequence_id`` and ``__pos`` to an event frame and sort it into sequences.

    Parameters
    ----------
    frame : polars.LazyFrame
        Events with ``entity_col``, a numeric ``time_col`` (seconds) and the
        row-order column ``__row`` (added by the readers; created here if absent).
    entity_col, time_col : str
        Column names.
    gap_seconds : float
        Inactivity gap that starts a new session (strictly greater splits).
    max_events : int
        Longest session; longer ones are cut into consecutive parts.
    session_col : str, optional
        Use this column's values as sessions instead of gap splitting.

    Returns
    -------
    polars.LazyFrame
        The events sorted by sequence and time, with ``sequence_id`` (Utf8) and
        ``__pos`` (0-based position in the sequence).
    """
    if ROW_COL not in frame.collect_schema().names():
        frame = frame.with_row_index(ROW_COL)
    if session_col is not None:
        frame = frame.sort([session_col, time_col, ROW_COL])
        part = pl.int_range(pl.len()).over(session_col) // max_events
        sess = pl.col(session_col).cast(pl.Utf8)
        seq = (
            pl.when(part == 0)
            .then(sess)
            .otherwise(pl.concat_str([sess, pl.lit("."), part.cast(pl.Utf8)]))
            .alias(SEQUENCE_ID)
        )
        frame = frame.with_columns(seq)
    else:
        frame = frame.sort([entity_col, time_col, ROW_COL])
        helpers, seq = session_ids_expr(entity_col, time_col, gap_seconds, max_events)
        for step in helpers:
            frame = frame.with_columns(step)
        frame = frame.with_columns(seq).drop(["__gapsess", "__inpos", "__part", "__start", "__k"])
    return frame.with_columns(pl.int_range(pl.len()).over(SEQUENCE_ID).alias(POS_COL))
