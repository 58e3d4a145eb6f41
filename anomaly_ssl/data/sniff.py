"""File sniffing: decide how to read an input file before reading it.

:func:`resolve_plan` looks at the file name and its first 64 KiB to pick the
container (parquet by suffix or ``PAR1`` magic, JSON lines by suffix or a
leading ``{``, otherwise delimited text, optionally ``.gz``), the delimiter
(the candidate that occurs equally often on each of the first lines), whether
there is a header (a known column name in the first line, or numbers in the
second line below names in the first), and the logical format (``data.format``,
or from the columns: entity+event columns = events, a tokens column =
sequences; ``id,tok tok`` lines = hdfs; delimiter-free lines = lines).  The
result is a :class:`~anomaly_ssl.data.scan.ReadPlan`; ambiguous or unreadable
files raise :class:`~anomaly_ssl.errors.DataError` saying which setting to use.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from ..config import DataConfig
from ..errors import DataError
from .scan import ReadPlan, scan_columns, utf8_error

PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
TEXT_SUFFIXES = frozenset({".csv", ".tsv", ".tab", ".txt", ".dat", ".log"})
JSON_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
DELIMITER_CANDIDATES = (",", "\t", ";", "|")
#: an HDFS-style line: ``id,tok tok tok`` (exactly one comma: a CSV row with spaces in a field is not one)
_HDFS_LINE = re.compile(r"^[^,\s]+,\s*[^,\s]+(\s+[^,\s]+)*\s*$")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def resolve_plan(path: str | Path, cfg: DataConfig) -> ReadPlan:
    """Decide container, logical format, delimiter and header for ``path``."""
    plan = open_plan(path, cfg)
    path, container, compressed = plan.path, plan.container, plan.compressed
    if container in ("parquet", "jsonl"):
        if cfg.format == "lines":
            got = "parquet" if container == "parquet" else "JSON lines"
            raise DataError(f"{path}: data.format=lines needs a text file, got {got}")
        plan.format = _format_from_columns(scan_columns(plan, cfg), cfg, plan)
        return plan
    lines = head_lines(path, compressed)
    if not lines:
        raise DataError(f"{path}: the file is empty")
    if cfg.format == "lines" or (cfg.format == "auto" and _is_token_lines(lines, cfg)):
        plan.format, plan.delimiter, plan.has_header = "lines", None, False
        return plan
    plan.delimiter = cfg.delimiter or sniff_delimiter(lines, path)
    first = _split(lines[0], plan.delimiter)
    known = _known_columns(cfg)
    if cfg.format == "hdfs" and not {cfg.id_col, cfg.tokens_col} <= set(first):
        _hdfs_lines_plan(plan, cfg, lines)
        return plan
    no_names = not set(first) & known and not cfg.has_header and not cfg.columns
    if cfg.format == "auto" and no_names and _is_hdfs_lines(lines):
        _hdfs_lines_plan(plan, cfg, lines)
        return plan
    plan.has_header = (
        cfg.has_header if cfg.has_header is not None else _guess_header(lines, plan.delimiter, cfg)
    )
    if not plan.has_header:
        n_fields = len(first)
        if cfg.columns is not None and len(cfg.columns) != n_fields:
            raise DataError(
                f"{path}: data.columns names {len(cfg.columns)} columns {cfg.columns} but the first line "
                f"has {n_fields} fields (delimiter {plan.delimiter!r})"
            )
        plan.new_columns = list(cfg.columns) if cfg.columns else [f"column_{i + 1}" for i in range(n_fields)]
    plan.format = _format_from_columns(scan_columns(plan, cfg), cfg, plan)
    return plan


def open_plan(path: str | Path, cfg: DataConfig) -> ReadPlan:
    """Check the file exists and is not empty; pick its container."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a data file (parquet, CSV, JSON lines or text)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    container, compressed = _container(path, cfg)
    return ReadPlan(path, container, cfg.format, compressed)


def _hdfs_lines_plan(plan: ReadPlan, cfg: DataConfig, lines: list[str]) -> None:
    if not _HDFS_LINE.match(lines[0]):
        raise DataError(
            f"{plan.path}: data.format=hdfs expects `id,tok tok tok` lines or a header with "
            f"{cfg.id_col!r} and {cfg.tokens_col!r}; the first line is {lines[0][:80]!r}"
        )
    plan.format, plan.delimiter, plan.has_header = "hdfs", ",", False
    plan.id_col, plan.tokens_col = "__hdfs_id", "__hdfs_tokens"
    plan.new_columns = [plan.id_col, plan.tokens_col]


def _container(path: Path, cfg: DataConfig) -> tuple[str, bool]:
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    if compressed:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in PARQUET_SUFFIXES:
        if compressed:
            raise DataError(f"{path}: gzipped parquet is not supported; decompress it first")
        return "parquet", False
    if suffix in JSON_SUFFIXES:
        return "jsonl", compressed
    if suffix in TEXT_SUFFIXES:
        return "csv", compressed
    if suffix and not _looks_like_name_part(suffix) and cfg.format == "auto" and not compressed:
        raise DataError(
            f"{path}: unknown file extension {suffix!r} with data.format=auto; use .parquet, .csv, .tsv, "
            ".txt, .jsonl/.ndjson (optionally .gz), or set data.format (events, sequences, hdfs, lines)"
        )
    head = _read_head_bytes(path, compressed, 64)
    if head.startswith(b"PAR1"):
        return "parquet", False
    if head.lstrip().startswith(b"{"):
        return "jsonl", compressed
    return "csv", compressed


def _looks_like_name_part(suffix: str) -> bool:
    # "hdfs_train" has no suffix; "blocks.2024" or "app.v2" are names, not extensions
    return not suffix[1:].isalpha()


def _read_head_bytes(path: Path, compressed: bool, n: int) -> bytes:
    try:
        if compressed:
            with gzip.open(path, "rb") as fh:
                return fh.read(n)
        with open(path, "rb") as fh:
            return fh.read(n)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the file ({exc})") from None


def head_lines(path: Path, compressed: bool, n_bytes: int = 65536) -> list[str]:
    """First lines of a text file (decoded strictly as UTF-8, blank lines skipped)."""
    raw = _read_head_bytes(path, compressed, n_bytes)
    cut = raw.rfind(b"\n") + 1 if len(raw) == n_bytes and b"\n" in raw else len(raw)
    try:
        text = raw[:cut].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise utf8_error(path, exc.start, raw[: exc.start].count(b"\n") + 1, raw[exc.start]) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()][:50]


def _split(line: str, delimiter: str) -> list[str]:
    return [f.strip().strip('"') for f in line.split(delimiter)]


def sniff_delimiter(lines: list[str], path: Path) -> str:
    """Tab for ``.tsv``/``.tab``, else the candidate found equally often (and most) on each line."""
    if path.suffixes and path.suffixes[0].lower() in {".tsv", ".tab"}:
        return "\t"
    sample = lines[:20]
    best, best_count = ",", 0
    for cand in DELIMITER_CANDIDATES:
        counts = {line.count(cand) for line in sample}
        if len(counts) == 1 and (n := counts.pop()) > best_count:
            best, best_count = cand, n
    return best


def _is_token_lines(lines: list[str], cfg: DataConfig) -> bool:
    """Auto-detection: no header, no delimiter, just space-separated tokens on each line."""
    if cfg.has_header or cfg.columns or cfg.delimiter:
        return False
    return not any(c in line for line in lines[:20] for c in DELIMITER_CANDIDATES)


def _is_hdfs_lines(lines: list[str]) -> bool:
    """Auto-detection: ``id,tok tok ...`` on every line, several tokens on some (not a 2-column CSV)."""
    sample = lines[:20]
    return all(_HDFS_LINE.match(line) for line in sample) and any(
        len(line.split(",", 1)[1].split()) > 1 for line in sample
    )


def _known_columns(cfg: DataConfig) -> set[str]:
    names = {cfg.entity_col, cfg.event_col, cfg.id_col, cfg.tokens_col, *cfg.categorical, *cfg.numeric}
    names |= {c for c in (cfg.time_col, cfg.session_col) if c}
    return names


def _guess_header(lines: list[str], delimiter: str, cfg: DataConfig) -> bool:
    first = _split(lines[0], delimiter)
    if set(first) & _known_columns(cfg):
        return True
    if cfg.columns:
        return False
    if any(_NUMBER.match(f) for f in first):
        return False
    if len(lines) > 1:
        second = _split(lines[1], delimiter)
        return any(_NUMBER.match(b) and not _NUMBER.match(a) for a, b in zip(first, second))
    return True


def _format_from_columns(columns: list[str], cfg: DataConfig, plan: ReadPlan) -> str:
    names = set(columns)
    if cfg.format in ("events", "sequences"):
        return cfg.format
    if cfg.format == "hdfs":
        return "hdfs"
    if {cfg.entity_col, cfg.event_col} <= names:
        return "events"
    if cfg.tokens_col in names:
        return "sequences"
    hint = " (the file has no header: set data.columns)" if plan.new_columns and not cfg.columns else ""
    raise DataError(
        f"{plan.path}: cannot tell the format: an event table needs columns {cfg.entity_col!r} "
        f"(data.entity_col) and {cfg.event_col!r} (data.event_col), a sequence table {cfg.id_col!r} "
        f"and {cfg.tokens_col!r} (data.id_col, data.tokens_col); the file has {column_list(columns)}{hint}. "
        "Set the column names or data.format"
    )


def column_list(columns: list[str], k: int = 20) -> str:
    """``columns ['a', 'b', ...]`` for error messages, at most ``k`` names."""
    shown = ", ".join(repr(c) for c in columns[:k])
    return f"columns [{shown}{', ...' if len(columns) > k else ''}]"
