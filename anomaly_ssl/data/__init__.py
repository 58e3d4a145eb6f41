"""Data layer: input files -> sequences tables -> vocabulary -> encoded token ids.

Public API: :func:`load_sequences` / :func:`iter_sequence_batches` (readers),
the sequences-table schema and :func:`validate_sequences_table`,
:class:`Vocabulary`, :func:`read_labels` / :func:`join_labels`,
:func:`inspect_data`, plus the encoded layout (:class:`EncodedSequences`) and
the sessionisation rule (:func:`sessionize`).
"""

from .encoded import (
    CLS_ID,
    EOS_ID,
    EVENT_FIELD,
    GAP_FIELD,
    MASK_ID,
    N_SPECIAL,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    EncodedSequences,
)
from .inspect import format_summary, inspect_data
from .labels import join_labels, read_labels
from .readers import LoadReport, SequenceLoad, iter_sequence_batches, load_sequences, read_table
from .sequences import SEQUENCES_SCHEMA, sequences_schema, validate_sequences_table
from .sessionize import sessionize
from .vocab import FieldVocab, Vocabulary, gap_edges, stable_hash_bucket

__all__ = [
    "CLS_ID",
    "EOS_ID",
    "EVENT_FIELD",
    "GAP_FIELD",
    "MASK_ID",
    "N_SPECIAL",
    "PAD_ID",
    "SEQUENCES_SCHEMA",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "EncodedSequences",
    "FieldVocab",
    "LoadReport",
    "SequenceLoad",
    "Vocabulary",
    "format_summary",
    "gap_edges",
    "inspect_data",
    "iter_sequence_batches",
    "join_labels",
    "load_sequences",
    "read_labels",
    "read_table",
    "sequences_schema",
    "sessionize",
    "stable_hash_bucket",
    "validate_sequences_table",
]
