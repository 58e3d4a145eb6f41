"""Configuration: one dataclass per stage, composed into :class:`Config`.

Each stage owns a small dataclass with its defaults and a ``validate`` method;
:class:`Config` composes them.  Configs are loaded from YAML files (``configs/``)
and overridden with ``key=value`` strings (``model.d_model=64``).  Loading is
strict: unknown keys and wrong types raise :class:`~anomaly_ssl.errors.ConfigError`
naming the key and the closest valid key.  Fields derived from data (vocabulary
sizes, sequence lengths) are never part of the config; they live in the run
directory next to the model.

The strict loader (type checking, overrides, ``base:`` inheritance) lives in
:mod:`anomaly_ssl.config_loader`; this module holds only the schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .errors import ConfigError

# --------------------------------------------------------------------------- data


@dataclass
class DataConfig:
    """How to read input files into sequences (format, column mapping, sessions).

    ``format='auto'`` picks by content: a table with ``entity_col`` and ``event_col``
    is an event table; one with ``tokens_col`` a sequence table; header-less
    ``id,tok tok`` lines are HDFS-style sequence files; lines of space-separated
    tokens without any delimiter are one sequence per line (``lines``).  The
    container (parquet, CSV/TSV, ``.gz``, JSON lines) follows the file extension;
    files without one are sniffed.  See :mod:`anomaly_ssl.data.readers`.
    """

    format: Literal["auto", "events", "sequences", "hdfs", "lines"] = "auto"
    #: field delimiter for CSV-like files; ``None`` sniffs it from the first line
    delimiter: str | None = None
    #: whether CSV-like files have a header row; ``None`` guesses
    has_header: bool | None = None
    #: column names for header-less files, in file order
    columns: list[str] | None = None
    entity_col: str = "user_id"
    time_col: str | None = "ts"
    event_col: str = "event"
    #: an existing session column; when set, sessions are taken from it instead of gaps
    session_col: str | None = None
    time_unit: Literal["auto", "s", "ms", "us", "iso"] = "auto"
    #: categorical attribute columns (item, category, device, ...)
    categorical: list[str] = field(default_factory=list)
    #: numeric attribute columns (price, amount, ...)
    numeric: list[str] = field(default_factory=list)
    #: sequence tables: the id column and the tokens column (list or separated string)
    id_col: str = "sequence_id"
    tokens_col: str = "tokens"
    token_sep: str = " "
    #: split an entity's stream where consecutive events are more than this apart
    session_gap_minutes: float = 30.0
    #: split sessions longer than this many events into consecutive parts
    max_session_events: int = 4096
    #: rows with nulls in required columns are dropped and counted (else an error)
    drop_null_rows: bool = True
    #: CSV-like files: extra strings read as null (e.g. ``[NA, "-"]``); empty fields always are
    null_values: list[str] = field(default_factory=list)
    #: strptime-style format (chrono syntax, e.g. ``"%d/%m/%Y %H:%M"``) for string timestamps;
    #: ``None`` tries the ISO 8601 variants
    time_format: str | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` on inconsistent settings."""
        reserved = {"sequence_id", "entity_id", "event", "ts", "gap"}
        for key in ("categorical", "numeric"):
            clash = sorted(set(getattr(self, key)) & reserved)
            if clash:
                raise ConfigError(
                    f"data.{key} names {clash}, which are output columns of the sequences table "
                    f"({', '.join(sorted(reserved))}); rename the source column(s)"
                )
        if not self.token_sep:
            raise ConfigError("data.token_sep must not be empty (e.g. ' ')")
        if self.columns is not None and len(set(self.columns)) != len(self.columns):
            dup = sorted({c for c in self.columns if self.columns.count(c) > 1})
            raise ConfigError(f"data.columns repeats {dup}; column names must be unique")
        if self.session_gap_minutes <= 0:
            raise ConfigError("data.session_gap_minutes must be > 0 (e.g. 30)")
        if self.max_session_events < 1:
            raise ConfigError("data.max_session_events must be >= 1")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ConfigError(
                f"data.delimiter must be one character, got {self.delimiter!r}; "
                "use '\\t' for TSV"
            )
        overlap = set(self.categorical) & set(self.numeric)
        if overlap:
            raise ConfigError(
                f"column(s) {sorted(overlap)} are in both data.categorical and data.numeric"
            )


@dataclass
class VocabConfig:
    """How values become token ids (fitted on training data only)."""

    #: values seen fewer times in training map to UNK
    min_count: int = 1
    #: categorical fields with more distinct values than this are hashed into buckets
    hash_threshold: int = 1000
    hash_buckets: int = 1024
    #: quantile buckets for numeric fields
    numeric_buckets: int = 16
    #: log-spaced buckets for the time gap before each event
    gap_buckets: int = 16

    def validate(self) -> None:
        """Raise :class:`ConfigError` on invalid sizes."""
        for name in ("min_count", "hash_threshold", "hash_buckets", "numeric_buckets", "gap_buckets"):
            if getattr(self, name) < 1:
                raise ConfigError(f"vocab.{name} must be >= 1, got {getattr(self, name)}")


# -------------------------------------------------------------------------- model

#: named model sizes: (d_model, n_layers, n_heads, d_ff).  Heads are 32 wide: on the CPU,
#: attention with 16-wide heads costs ~1.5x more time per token for the same quality
MODEL_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (32, 1, 1, 64),
    "small": (64, 2, 2, 128),
    "base": (256, 4, 8, 1024),
}


@dataclass
class ModelConfig:
    """Masked-event Transformer architecture.

    ``size`` picks a preset; explicit ``d_model``/``n_layers``/``n_heads``/``d_ff``
    override it field by field.
    """

    size: Literal["tiny", "small", "base"] = "small"
    d_model: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    d_ff: int | None = None
    #: 0 by default: masking is already a strong regulariser, early stopping guards against
    #: over-fitting, and dropout costs ~15% of CPU training time
    dropout: float = 0.0
    #: sequence embedding: the CLS vector or the mean over events
    pooling: Literal["cls", "mean"] = "cls"
    #: attribute fields the masked head also predicts (besides the event type)
    predict_fields: list[str] = field(default_factory=list)
    #: append an end-of-sequence token, so a sequence that stops too early is surprising
    add_eos: bool = True
    #: weight of the composition objective: the CLS vector predicts which events the window holds
    #: (KL to its event histogram), so the sequence embedding summarises what happened (0 = off)
    bag_weight: float = 0.0
    #: masked "end slots" appended after EOS (a random 0..N in training, N when scoring), so the
    #: padding mask does not give away where a sequence ends and an early end stays surprising
    eos_slots: int = 0
    #: use torch's fused scaled_dot_product_attention (False = reference maths, for benchmarks)
    fused_attention: bool = True
    #: rotary position encoding in attention (besides the learned position embedding): relative
    #: order ("B right after A") is learned in far fewer steps
    rotary: bool = True

    def resolved(self) -> tuple[int, int, int, int]:
        """Return ``(d_model, n_layers, n_heads, d_ff)`` after applying the preset."""
        d, layers, heads, ff = MODEL_SIZES[self.size]
        return (
            self.d_model if self.d_model is not None else d,
            self.n_layers if self.n_layers is not None else layers,
            self.n_heads if self.n_heads is not None else heads,
            self.d_ff if self.d_ff is not None else ff,
        )

    def validate(self) -> None:
        """Raise :class:`ConfigError` on an impossible architecture."""
        d, layers, heads, ff = self.resolved()
        if layers < 1:
            raise ConfigError(f"model.n_layers must be >= 1, got {layers}")
        if heads < 1:
            raise ConfigError(f"model.n_heads must be >= 1, got {heads}")
        if d < 1 or ff < 1:
            raise ConfigError(f"model.d_model and model.d_ff must be >= 1, got {d} and {ff}")
        if d % heads:
            raise ConfigError(
                f"model.d_model ({d}) must be divisible by model.n_heads ({heads}); "
                f"try n_heads={_largest_divisor(d, heads)}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.bag_weight < 0:
            raise ConfigError(f"model.bag_weight must be >= 0, got {self.bag_weight}")
        if not 0 <= self.eos_slots <= 16:
            raise ConfigError(f"model.eos_slots must be in [0, 16], got {self.eos_slots}")
        if self.eos_slots and not self.add_eos:
            raise ConfigError("model.eos_slots needs model.add_eos=true (or set model.eos_slots=0)")
        if self.rotary and (d // heads) % 2:
            raise ConfigError(
                f"model.rotary needs an even head size, but d_model / n_heads = {d} / {heads} = "
                f"{d // heads}; change model.n_heads or set model.rotary=false"
            )


def _largest_divisor(n: int, at_most: int) -> int:
    return max(k for k in range(1, max(at_most, 1) + 1) if n % k == 0)


@dataclass
class WindowConfig:
    """How sequences longer than the model's context are handled."""

    #: tokens per window, CLS and EOS included
    max_len: int = 128
    #: ``split`` = overlapping windows (scores aggregated per sequence); ``truncate`` = keep the start
    mode: Literal["split", "truncate"] = "split"
    #: distance between window starts; ``None`` = half a window
    stride: int | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` on invalid window sizes."""
        if self.max_len < 4:
            raise ConfigError(f"window.max_len must be >= 4, got {self.max_len}")
        if self.stride is not None and not 1 <= self.stride <= self.max_len - 2:
            raise ConfigError(
                f"window.stride must be in [1, max_len - 2] = [1, {self.max_len - 2}], got {self.stride}"
            )


@dataclass
class MaskingConfig:
    """BERT-style masking of events for pretraining."""

    mask_prob: float = 0.15
    #: of the selected positions: this share becomes MASK ...
    mask_replace_prob: float = 0.8
    #: ... this share a random event; the rest keeps the original
    random_replace_prob: float = 0.1
    #: every sequence gets at least this many masked positions
    min_masked: int = 1

    def validate(self) -> None:
        """Raise :class:`ConfigError` on probabilities outside [0, 1]."""
        for name in ("mask_prob", "mask_replace_prob", "random_replace_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"masking.{name} must be in [0, 1], got {v}")
        if self.mask_prob == 0.0:
            raise ConfigError("masking.mask_prob must be > 0 (e.g. 0.15)")
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-9:
            raise ConfigError(
                "masking.mask_replace_prob + masking.random_replace_prob must be <= 1 "
                f"(got {self.mask_replace_prob} + {self.random_replace_prob}); the rest is kept"
            )
        if self.min_masked < 0:
            raise ConfigError("masking.min_masked must be >= 0")


@dataclass
class TrainConfig:
    """Pretraining loop settings."""

    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    #: fraction of the total steps used for linear warm-up
    warmup_ratio: float = 0.05
    #: the cosine decay ends at this fraction of ``lr``
    min_lr_ratio: float = 0.1
    max_epochs: int = 30
    #: stop after this many optimiser steps (None = epochs decide)
    max_steps: int | None = None
    grad_accum: int = 1
    grad_clip: float = 1.0
    #: share of the (unlabelled) training sequences held out for validation
    val_fraction: float = 0.1
    #: validate every this many optimiser steps (None = once per epoch)
    eval_every: int | None = None
    #: what early stopping and the kept ("best") weights follow: the masked loss, or the masked
    #: error rate (1 - accuracy), which does not punish confident mistakes twice
    early_stopping_metric: Literal["val_loss", "val_error"] = "val_loss"
    #: stop after this many validations without improvement (0 = never)
    patience: int = 5
    #: write an atomic checkpoint every this many optimiser steps (0 = only at the end)
    checkpoint_every: int = 200
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    num_workers: int = 0
    #: intra-op CPU threads per process while training on the CPU (0 = torch's default, all
    #: cores).  Small models train fastest on one thread per process (and do not collapse
    #: on a busy machine); use ``torchrun --nproc_per_node N`` to put N cores to work
    cpu_threads: int = 1
    log_every: int = 20
    #: contamination-robust pretraining: drop this share of highest-loss sequences of each batch
    trim_fraction: float = 0.05
    #: ... starting after this share of the total steps (the model first learns the bulk)
    trim_start: float = 0.2

    def validate(self) -> None:
        """Raise :class:`ConfigError` on invalid values."""
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("train.batch_size and train.grad_accum must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"train.val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ConfigError(f"train.trim_fraction must be in [0, 0.5), got {self.trim_fraction}")
        if self.max_epochs < 1:
            raise ConfigError("train.max_epochs must be >= 1")
        if self.cpu_threads < 0:
            raise ConfigError(f"train.cpu_threads must be >= 0 (0 = all cores), got {self.cpu_threads}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("train.max_steps must be >= 1 or null")


# ------------------------------------------------------------------------ scoring


@dataclass
class DetectConfig:
    """Detectors, their ensemble and the label-free threshold.

    ``members`` names detectors: ``knn`` and ``density`` (faiss on embeddings),
    ``surprise`` (masked-event negative log-likelihood), ``ngram`` (rare event
    transitions) and PyOD detectors as ``ALGO@FEATURES`` with ALGO in
    iforest/ecod/copod/hbos/knn/lof and FEATURES in embedding/counts.
    """

    members: list[str] = field(default_factory=lambda: ["surprise", "knn"])
    #: weight per member for ``combine='mean'``; missing members weigh 1
    weights: dict[str, float] = field(default_factory=dict)
    #: ``max`` flags what any member finds unusual (members catch different kinds of anomaly)
    combine: Literal["mean", "max"] = "max"
    #: how members are put on one scale, from their training scores (``rank`` = training ECDF;
    #: robust z breaks down when most kNN distances are 0, as in pools with many duplicates)
    normalize: Literal["robust_z", "rank"] = "rank"
    k: int = 10
    knn_aggregate: Literal["mean", "kth"] = "mean"
    metric: Literal["l2", "cosine"] = "cosine"
    #: ``auto``: exact (flat, or pruned from 20,000 vectors on the CPU) up to ``exact_max``, IVF above
    index: Literal["auto", "flat", "pruned", "ivf", "hnsw"] = "auto"
    #: up to this many reference vectors the index is exact
    exact_max: int = 100_000
    #: use faiss on the GPU when one is present (no silent fallback when forced)
    faiss_gpu: Literal["auto", "on", "off"] = "auto"
    #: contamination-robust reference: leave out this share of most suspicious training sequences
    reference_trim: float = 0.05
    #: rounds of reference trimming (score, drop the top share, re-score)
    trim_iterations: int = 1
    #: a group of identical sequences smaller than this (a share of the pool if < 1, else a count)
    #: does not count as its own neighbours; set it above the largest plausible anomalous group
    min_cluster_size: float = 0.01
    #: embeddings closer than this count as copies of one another for min_cluster_size (0 = exact)
    duplicate_radius: float = 0.0
    #: n-gram order of the ``ngram`` transition-rarity member
    ngram_n: int = 2
    #: robust z-scores of members are clipped to [-clip, clip] before combining (null = no clip)
    normalize_clip: float | None = 10.0
    #: masked-event surprise: passes over each sequence (each position masked once)
    surprise_passes: int = 5
    surprise_aggregate: Literal["mean", "max", "topk"] = "max"
    surprise_topk: int = 3
    #: expected share of anomalies; sets the threshold on training scores
    contamination: float = 0.03
    #: ``contamination``: the (1 - contamination) training quantile; ``quantile``: threshold_quantile;
    #: ``mad``: median + threshold_z * 1.4826 * MAD of the training scores
    threshold: Literal["contamination", "quantile", "mad"] = "contamination"
    threshold_quantile: float = 0.99
    threshold_z: float = 3.5
    explain_topk: int = 5
    explain_neighbors: int = 3
    batch_size: int = 256

    def validate(self) -> None:
        """Raise :class:`ConfigError` on invalid values."""
        if not self.members:
            raise ConfigError("detect.members must name at least one detector, e.g. [knn, surprise]")
        if self.k < 1:
            raise ConfigError(f"detect.k must be >= 1, got {self.k}")
        if not 0.0 < self.contamination < 0.5:
            raise ConfigError(f"detect.contamination must be in (0, 0.5), got {self.contamination}")
        if not 0.0 < self.threshold_quantile < 1.0:
            raise ConfigError(
                f"detect.threshold_quantile must be in (0, 1), got {self.threshold_quantile}"
            )
        if not 0.0 <= self.reference_trim < 0.5:
            raise ConfigError(f"detect.reference_trim must be in [0, 0.5), got {self.reference_trim}")
        if self.surprise_passes < 1:
            raise ConfigError("detect.surprise_passes must be >= 1")
        if self.trim_iterations < 1:
            raise ConfigError(f"detect.trim_iterations must be >= 1, got {self.trim_iterations}")
        if self.min_cluster_size < 0 or self.duplicate_radius < 0:
            raise ConfigError("detect.min_cluster_size and detect.duplicate_radius must be >= 0")
        if not 1 <= self.ngram_n <= 6:
            raise ConfigError(f"detect.ngram_n must be in [1, 6], got {self.ngram_n}")
        if self.threshold_z <= 0:
            raise ConfigError(f"detect.threshold_z must be > 0, got {self.threshold_z}")
        if self.normalize_clip is not None and self.normalize_clip <= 0:
            raise ConfigError(f"detect.normalize_clip must be > 0 or null, got {self.normalize_clip}")
        unknown = set(self.weights) - set(self.members)
        if unknown:
            raise ConfigError(
                f"detect.weights names {sorted(unknown)} which are not in detect.members {self.members}"
            )


# ----------------------------------------------------------------- active learning


@dataclass
class QueryConfig:
    """Which sequences go to annotators."""

    n: int = 50
    strategy: Literal["uncertainty", "diverse", "topk", "random"] = "diverse"
    #: ``diverse``: candidates considered per requested label
    candidate_factor: int = 10
    #: replace entity ids by a keyed hash before they leave the run directory
    pseudonymize: bool = True

    def validate(self) -> None:
        """Raise :class:`ConfigError` on invalid values."""
        if self.n < 1:
            raise ConfigError(f"query.n must be >= 1, got {self.n}")
        if self.candidate_factor < 1:
            raise ConfigError("query.candidate_factor must be >= 1")


@dataclass
class LabelStudioConfig:
    """Where the Label Studio server is and how tasks look there."""

    url: str = "http://127.0.0.1:8080"
    project: str = "anomaly-ssl"
    #: environment variable holding the API key (the key itself is never stored)
    api_key_env: str = "LABEL_STUDIO_API_KEY"
    timeout_s: float = 60.0
    retries: int = 3
    #: anomaly types annotators can choose from
    taxonomy: list[str] = field(
        default_factory=lambda: [
            "scraping_bot",
            "order_brushing",
            "card_testing",
            "account_takeover",
            "returns_abuse",
            "coupon_abuse",
            "cart_hoarding",
            "system_failure",
            "other",
        ]
    )

    def validate(self) -> None:
        """Raise :class:`ConfigError` on invalid values."""
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"label_studio.url must start with http:// or https://, got {self.url!r}")
        if self.retries < 0 or self.timeout_s <= 0:
            raise ConfigError("label_studio.retries must be >= 0 and label_studio.timeout_s > 0")


@dataclass
class FinetuneConfig:
    """The supervised head trained on annotators' labels."""

    epochs: int = 200
    lr: float = 1e-2
    weight_decay: float = 1e-3
    #: strength of the prior that keeps the head near the unsupervised ranking, in labels:
    #: the head learns a correction of the unsupervised score's logit with L2 strength
    #: ``weight_decay + prior_labels / n_labels`` (features standardised on the whole pool)
    prior_labels: float = 100.0
    #: also train the top N encoder layers (0 = head only, on frozen embeddings)
    unfreeze_layers: int = 0
    #: weight ``w`` of the head's probability in the final score, the rest the unsupervised
    #: rank (``1 − (1 − p)^w (1 − r)^(1 − w)``): 1.0 uses the head as is (it already starts
    #: from the unsupervised score), lower values keep the unsupervised ranking more.
    #: ``auto`` chooses it at each fine-tune from ``blend_grid`` by the out-of-fold PR-AUC of
    #: the blended score over the labels (ties go to the larger weight; 1.0 while a class
    #: has too few labels to cross-validate)
    blend: Literal["auto"] | float = "auto"
    #: the weights ``blend: auto`` chooses from
    blend_grid: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    cv_folds: int = 5

    def validate(self) -> None:
        """Raise :class:`ConfigError` on invalid values."""
        if self.blend != "auto" and not 0.0 <= self.blend <= 1.0:
            raise ConfigError(f"finetune.blend must be 'auto' or a number in [0, 1], got {self.blend}")
        if not self.blend_grid or not all(0.0 <= w <= 1.0 for w in self.blend_grid):
            raise ConfigError(
                f"finetune.blend_grid must be a non-empty list of weights in [0, 1], got {self.blend_grid}"
            )
        if self.prior_labels < 0 or self.weight_decay < 0:
            raise ConfigError("finetune.prior_labels and finetune.weight_decay must be >= 0")
        if self.epochs < 1 or self.cv_folds < 2:
            raise ConfigError("finetune.epochs must be >= 1 and finetune.cv_folds >= 2")


# --------------------------------------------------------------------------- root


@dataclass
class Config:
    """The root configuration: every stage's settings plus the global seed and device."""

    data: DataConfig = field(default_factory=DataConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    label_studio: LabelStudioConfig = field(default_factory=LabelStudioConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    seed: int = 0
    #: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``
    device: str = "auto"

    def validate(self) -> None:
        """Validate every section; raise :class:`ConfigError` on the first problem."""
        for section in (
            self.data,
            self.vocab,
            self.model,
            self.window,
            self.masking,
            self.train,
            self.detect,
            self.query,
            self.label_studio,
            self.finetune,
        ):
            section.validate()
        for name in self.model.predict_fields:
            if name not in self.data.categorical and name not in self.data.numeric:
                raise ConfigError(
                    f"model.predict_fields names {name!r}, which is not in data.categorical "
                    f"{self.data.categorical} or data.numeric {self.data.numeric}"
                )
