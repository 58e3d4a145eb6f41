"""The pretraining pipeline: sequences -> vocabulary -> windows -> masked-event Transformer.

:func:`pretrain` reads a data file, fits the vocabulary on the training split,
encodes, cuts windows, splits train/validation by *sequence* (seeded), trains
with the generic :class:`~anomaly_ssl.trainer.Trainer` and writes a
self-contained run directory (config, vocabulary, best weights, metrics,
checkpoint, model card).  :func:`pretrain_encoded` does the same from already
encoded sequences (notebooks, tests; the run directory is optional).  The
objective is the masked-event cross-entropy with an optional *trimmed* loss:
after ``train.trim_start`` of the steps, the ``train.trim_fraction`` windows of
each batch with the highest loss are ignored, so groups of anomalous sequences
in the unlabelled pool are not learned and stay surprising.
:func:`load_model` rebuilds the trained model for later stages.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from ._version import __version__
from .config import Config
from .data.encoded import EVENT_FIELD, N_SPECIAL, UNK_ID, EncodedSequences
from .distributed import DistInfo, all_reduce_sum, barrier, cpu_threads, init_distributed, shard
from .errors import DataError, RunDirError
from .io import atomic_path, atomic_write_text, read_json, write_json
from .masking import MaskedBatch, MaskingCollator, add_end_slots, hide_positions, maskable
from .model import IGNORE_INDEX, EventTransformer
from .run import RunDir
from .trainer import Callback, Trainer, TrainResult
from .windows import Windows, assemble, bucket_batches, make_windows

log = logging.getLogger(__name__)

CARD_FORMAT = "anomaly-ssl-model-card/1"


# ============================================================== batches and objective


class MaskedWindowSource:
    """Training batches: length-bucketed windows of the training sequences, freshly masked.

    The batch plan of an epoch depends only on ``(seed, epoch)`` and the mask of a
    batch only on ``(seed, epoch, global batch index)``, so any batch can be rebuilt
    after a restart; under DDP each rank takes every ``world_size``-th batch.
    """

    def __init__(
        self,
        encoded: EncodedSequences,
        windows: Windows,
        window_index: np.ndarray,
        collator: MaskingCollator,
        batch_size: int,
        seed: int,
        dist_info: DistInfo | None = None,
    ) -> None:
        self.encoded = encoded
        self.windows = windows
        self.window_index = np.asarray(window_index, dtype=np.int64)
        self.collator = collator
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.dist = dist_info or DistInfo()
        self._lengths = windows.lengths[self.window_index]
        self._plan_cache: tuple[int, list[tuple[int, np.ndarray]]] | None = None

    def _plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        if self._plan_cache is None or self._plan_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            batches = bucket_batches(self._lengths, self.batch_size, rng)
            numbered = [(i, self.window_index[b]) for i, b in enumerate(batches)]
            self._plan_cache = (epoch, shard(numbered, self.dist))
        return self._plan_cache[1]

    def num_batches(self, epoch: int) -> int:
        return len(self._plan(epoch))

    def get(self, epoch: int, index: int) -> MaskedBatch:
        global_index, windows = self._plan(epoch)[index]
        inputs, mask = assemble(self.encoded, self.windows, windows)
        return self.collator(inputs, mask, key=(epoch, global_index))


class MaskedEventObjective:
    """The pretraining objective for :class:`~anomaly_ssl.trainer.Trainer`, with a trimmed loss.

    The loss is the token-weighted mean of the masked cross-entropy over the batch's
    windows.  With ``trim_fraction > 0``, once ``progress >= trim_start`` every window
    whose loss exceeds the ``1 - trim_fraction`` quantile of the last ``history``
    window losses gets weight 0 (the small-loss trick), so anomalies in the unlabelled
    pool are not learned and stay surprising.  The threshold comes from recent batches,
    not from the current one: length bucketing puts near-identical anomalous sequences
    (same length) into the *same* batch, where a per-batch top-k would drop only a few.
    The loss history is part of the checkpoint (``state_dict``), so resuming is exact.

    Parameters
    ----------
    trim_fraction : float
        Share of windows to ignore (0 = plain masked-LM loss).
    trim_start : float
        Training progress (0..1) from which windows are trimmed.
    history : int
        Window losses remembered for the threshold.
    min_history : int
        No trimming before this many losses were seen.
    """

    def __init__(
        self, trim_fraction: float = 0.0, trim_start: float = 0.0, history: int = 2048, min_history: int = 256
    ) -> None:
        self.trim_fraction = float(trim_fraction)
        self.trim_start = float(trim_start)
        self.min_history = int(min_history)
        self.losses = torch.full((int(history),), float("nan"))
        self.seen = 0

    def __call__(self, model: torch.nn.Module, batch: MaskedBatch, progress: float) -> torch.Tensor:
        _, per_seq = model(
            batch.inputs, batch.attention_mask, batch.labels, reduction="sequence", return_logits=False
        )  # (B,)
        weight = (batch.labels[EVENT_FIELD] != IGNORE_INDEX).sum(1).to(per_seq.dtype)  # (B,) masked positions
        if self.trim_fraction > 0:
            current = per_seq.detach().float()  # (B,)
            self._remember(current)
            if progress >= self.trim_start and self.seen >= self.min_history:
                valid = self.losses[: min(self.seen, len(self.losses))]
                threshold = torch.quantile(valid, 1.0 - self.trim_fraction)
                weight = weight * (current <= threshold).to(weight.dtype)
        return (per_seq * weight).sum() / weight.sum().clamp(min=1.0)

    def _remember(self, values: torch.Tensor) -> None:
        if self.losses.device != values.device:
            self.losses = self.losses.to(values.device)
        n = len(self.losses)
        idx = (self.seen + torch.arange(len(values), device=values.device)) % n  # ring buffer
        self.losses[idx[-n:]] = values[-n:]
        self.seen += len(values)

    def state_dict(self) -> dict[str, Any]:
        """The loss history (tensors and ints only)."""
        return {"losses": self.losses.detach().cpu().clone(), "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.losses = state["losses"].clone().float()
        self.seen = int(state["seen"])


def masked_event_loss(trim_fraction: float = 0.0, trim_start: float = 0.0, **kw: int) -> MaskedEventObjective:
    """A :class:`MaskedEventObjective` (kept as a function for readability at call sites)."""
    return MaskedEventObjective(trim_fraction, trim_start, **kw)


class MaskedEvaluator:
    """Validation: masked loss and accuracy at *every* position, and the unigram baseline.

    Each validation window is scored in ``passes = round(1 / mask_prob)`` deterministic
    passes; pass ``j`` hides (all fields of) the positions ``p % passes == j``, so every
    event and EOS is predicted exactly once at the training masking density.  That is
    ~``passes`` times more predictions than one random mask, so early stopping sees far
    less noise.  Sums are reduced over ranks.  ``val_loss`` is the mean cross-entropy
    over masked positions, summed over predicted fields (the training loss); with
    ``trim_fraction > 0`` it leaves out the windows above the ``1 - trim_fraction``
    loss quantile, as training does, so early stopping is not steered by anomalies in
    the (unlabelled, contaminated) validation split (``val_loss_all`` keeps them).
    Accuracies are over all positions.
    """

    def __init__(
        self,
        encoded: EncodedSequences,
        windows: Windows,
        window_index: np.ndarray,
        mask_prob: float,
        batch_size: int,
        unigram_event: int,
        device: torch.device,
        dist_info: DistInfo | None = None,
        trim_fraction: float = 0.0,
        end_slots: int = 0,
    ) -> None:
        self.encoded = encoded
        self.windows = windows
        self.device = device
        self.trim_fraction = float(trim_fraction)
        self.end_slots = int(end_slots)
        self.dist = dist_info or DistInfo()
        self.passes = max(1, round(1.0 / mask_prob))
        window_index = np.asarray(window_index, dtype=np.int64)
        batches = bucket_batches(windows.lengths[window_index], max(1, batch_size // self.passes))
        self.batches = [window_index[b] for b in batches[self.dist.rank :: self.dist.world_size]]
        self.unigram_event = int(unigram_event)

    def _masked(self, idx: np.ndarray, fields: list[str]) -> MaskedBatch:
        inputs, mask = assemble(self.encoded, self.windows, idx)
        # the end slots of scoring (a fixed number after each EOS), never predicted themselves
        inputs, mask, slots = add_end_slots(inputs, mask, torch.full((len(idx),), self.end_slots))
        B, L = mask.shape
        big = {k: v.repeat(self.passes, 1) for k, v in inputs.items()}  # (P*B, L): row r is pass r // B
        big_mask = mask.repeat(self.passes, 1)  # (P*B, L)
        which = torch.arange(self.passes).repeat_interleave(B)[:, None]  # (P*B, 1)
        pos = maskable(big[EVENT_FIELD], big_mask) & (torch.arange(L)[None, :] % self.passes == which)
        pos &= ~slots.repeat(self.passes, 1)
        labels = {}
        for f in fields:
            orig = big[f]
            keep = pos if f == EVENT_FIELD else pos & ((orig >= N_SPECIAL) | (orig == UNK_ID))
            labels[f] = orig.masked_fill(~keep, IGNORE_INDEX)
        return MaskedBatch(hide_positions(big, pos), big_mask, labels)

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        fields = list(model.predicted)
        ce_parts: list[torch.Tensor] = []  # per batch: (B, n_fields) summed cross-entropy per window
        n_parts: list[torch.Tensor] = []  # per batch: (B, n_fields) predicted positions per window
        correct = unigram = 0.0
        with torch.inference_mode():
            for idx in self.batches:
                batch = self._masked(idx, fields).to(self.device)
                B = len(idx)
                inputs = {k: v for k, v in batch.inputs.items() if k in model.field_sizes}
                h = model.encode(inputs, batch.attention_mask)  # (P*B, L, d)
                ce_w = torch.zeros(B, len(fields), dtype=torch.float64)
                n_w = torch.zeros(B, len(fields), dtype=torch.float64)
                for j, f in enumerate(fields):
                    sel = batch.labels[f] != IGNORE_INDEX  # (P*B, L)
                    window = (sel.nonzero(as_tuple=True)[0] % B).cpu()  # (N,) row r is window r % B
                    target = batch.labels[f][sel]  # (N,)
                    logits = model.field_logits(h[sel], f).float()  # (N, V)
                    ce = F.cross_entropy(logits, target, reduction="none").double().cpu()  # (N,)
                    ce_w[:, j].index_add_(0, window, ce)
                    n_w[:, j].index_add_(0, window, torch.ones_like(ce))
                    if f == EVENT_FIELD:
                        correct += float((logits.argmax(-1) == target).sum())
                        unigram += float((target == self.unigram_event).sum())
                ce_parts.append(ce_w)
                n_parts.append(n_w)
        empty = torch.zeros(0, len(fields), dtype=torch.float64)
        ce_w = torch.cat(ce_parts) if ce_parts else empty
        n_w = torch.cat(n_parts) if n_parts else empty
        keep = self._kept_windows(ce_w, n_w)
        local = [ce_w.sum(0), n_w.sum(0), ce_w[keep].sum(0), n_w[keep].sum(0)]
        local.append(torch.tensor([correct, unigram], dtype=torch.float64))
        sums = all_reduce_sum(torch.cat(local), self.dist)
        k = len(fields)
        all_ce, all_n, kept_ce, kept_n = sums[:k], sums[k : 2 * k], sums[2 * k : 3 * k], sums[3 * k : 4 * k]
        n_event = max(float(all_n[0]), 1.0)  # the event field is always first
        return {
            "val_loss": float((kept_ce / kept_n.clamp(min=1.0)).sum()),
            "val_loss_all": float((all_ce / all_n.clamp(min=1.0)).sum()),
            "val_acc": float(sums[-2]) / n_event,
            "val_error": 1.0 - float(sums[-2]) / n_event,
            "val_unigram_acc": float(sums[-1]) / n_event,
            "val_masked_positions": n_event,
        }

    def _kept_windows(self, ce_w: torch.Tensor, n_w: torch.Tensor) -> torch.Tensor:
        """Windows whose loss is within the ``1 - trim_fraction`` quantile (all without trimming)."""
        loss = (ce_w / n_w.clamp(min=1.0)).sum(1)  # (W,) the window's masked loss
        if self.trim_fraction <= 0 or len(loss) == 0:
            return torch.ones(len(loss), dtype=torch.bool)
        return loss <= torch.quantile(loss, 1.0 - self.trim_fraction)


# ============================================================== pipeline


@dataclass
class PretrainResult:
    """Everything a later stage needs after pretraining (the lead's hook for embedding/detectors).

    ``train_index`` / ``val_index`` are sequence indices into ``encoded``.
    """

    model: EventTransformer
    vocab: Any
    encoded: EncodedSequences
    windows: Windows
    train_index: np.ndarray
    val_index: np.ndarray
    card: dict[str, Any]
    train: TrainResult
    run_dir: RunDir | None = None
    dist: DistInfo = field(default_factory=DistInfo)
    #: the fitted detectors (``pretrain(..., fit_detectors=True)``),
    #: a :class:`~anomaly_ssl.scoring.SequenceScorer`
    scorer: Any = None


def split_sequences(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of ``n`` sequences -> (train indices, val indices), both sorted."""
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def pretrain(
    data_path: str | Path,
    cfg: Config,
    run_dir: str | Path,
    resume: bool = False,
    fit_detectors: bool = True,
) -> PretrainResult:
    """Pretrain on a data file and write the run directory.

    Parameters
    ----------
    data_path : str or Path
        Event table, sequence table, HDFS or token-line file (read with ``cfg.data``).
    cfg : Config
        Validated configuration.
    run_dir : str or Path
        Output folder (created); see :mod:`anomaly_ssl.run`.
    resume : bool
        Continue from ``RUN/checkpoints/last.pt`` when present (same config and data).
    fit_detectors : bool
        Afterwards embed the whole pool and fit the detectors (``cfg.detect``), so
        the run directory is a ready detector for ``score``.

    Returns
    -------
    PretrainResult
    """
    from .data import Vocabulary, load_sequences

    cfg.validate()
    info = init_distributed(cfg.device)
    loaded = load_sequences(data_path, cfg.data)
    table = loaded.table
    if table.height == 0:
        raise DataError(f"{data_path}: no sequences to train on")
    train_idx, val_idx = split_sequences(table.height, cfg.train.val_fraction, cfg.seed)
    rd = RunDir(run_dir)
    if resume and rd.vocab_path.exists():
        vocab = Vocabulary.load(rd.vocab_path)
    else:
        vocab = Vocabulary.fit(table[train_idx], cfg.data, cfg.vocab)
    encoded = vocab.encode(table)
    result = pretrain_encoded(
        encoded,
        vocab,
        cfg,
        run_dir,
        train_index=train_idx,
        val_index=val_idx,
        resume=resume,
        data_path=data_path,
        dist_info=info,
    )
    if fit_detectors and info.is_main:
        # a run directory is a ready detector: embed the pool, fit the detectors, save them
        from .pipeline import fit_run_detectors

        holdout = np.zeros(len(encoded), dtype=bool)
        holdout[val_idx] = True
        with cpu_threads(cfg.train.cpu_threads, info.device):
            result.scorer = fit_run_detectors(
                run_dir, result.model, vocab, cfg, encoded, table, holdout, device=info.device
            )
    barrier(info)
    return result


def pretrain_encoded(
    encoded: EncodedSequences,
    vocab: Any,
    cfg: Config,
    run_dir: str | Path | None = None,
    *,
    train_index: np.ndarray | None = None,
    val_index: np.ndarray | None = None,
    resume: bool = False,
    data_path: str | Path | None = None,
    dist_info: DistInfo | None = None,
    callbacks: list[Callback] | None = None,
) -> PretrainResult:
    """Pretrain on encoded sequences; write the run directory when ``run_dir`` is given.

    Parameters
    ----------
    encoded : EncodedSequences
    vocab : Vocabulary
        Anything with ``sizes()``, ``event_token_counts()`` and ``save(path)``.
    cfg : Config
    run_dir : str or Path, optional
        None trains in memory (no files, no checkpoints).
    train_index, val_index : ndarray of int, optional
        Sequence indices; default a seeded split by ``cfg.train.val_fraction``.
    resume : bool
    data_path : str or Path, optional
        Recorded in the model card.
    dist_info : DistInfo, optional
        Default: joins the torchrun group when launched by torchrun.
    callbacks : list of Callback, optional
        Extra trainer callbacks.
    """
    t_start = time.perf_counter()
    cfg.validate()
    info = dist_info or init_distributed(cfg.device)
    if len(encoded) == 0:
        raise DataError("no sequences to train on")
    if train_index is None or val_index is None:
        train_index, val_index = split_sequences(len(encoded), cfg.train.val_fraction, cfg.seed)
    rd = RunDir(run_dir) if run_dir is not None else None
    if rd is not None and info.is_main:
        _write_setup(rd, cfg, vocab, resume)
    barrier(info)

    windows = make_windows(encoded.lengths, cfg.window, cfg.model.add_eos)
    train_w = windows.for_sequences(np.isin(np.arange(len(encoded)), train_index))
    val_w = windows.for_sequences(np.isin(np.arange(len(encoded)), val_index))
    with cpu_threads(cfg.train.cpu_threads, info.device):
        model, evaluator, trainer = _build(encoded, vocab, cfg, windows, train_w, val_w, rd, info, callbacks)
        log.info(
            "pretraining %s model (%d parameters) on %d windows of %d sequences (%d val), %d steps",
            cfg.model.size,
            model.n_params(),
            len(train_w),
            len(train_index),
            len(val_index),
            trainer.total_steps,
        )
        result = trainer.fit(resume=resume)
        model.eval()
        final = evaluator(model) if evaluator is not None else {}
    counts = {
        "n_train_sequences": len(train_index),
        "n_val_sequences": len(val_index),
        "n_windows": len(windows),
        "n_train_windows": len(train_w),
        "n_val_windows": len(val_w),
    }
    card = build_card(
        cfg, model, encoded, counts, result, final, data_path, info, time.perf_counter() - t_start
    )
    if rd is not None and info.is_main:
        save_weights(model, rd.weights_path)
        write_json(rd.card_path, card)
        log.info("wrote %s", rd.path)
    barrier(info)
    return PretrainResult(model, vocab, encoded, windows, train_index, val_index, card, result, rd, info)


def _build(
    encoded: EncodedSequences,
    vocab: Any,
    cfg: Config,
    windows: Windows,
    train_w: np.ndarray,
    val_w: np.ndarray,
    rd: RunDir | None,
    info: DistInfo,
    callbacks: list[Callback] | None,
) -> tuple[EventTransformer, MaskedEvaluator | None, Trainer]:
    """The model, the validation function and the trainer of one pretraining run."""
    sizes = vocab.sizes()
    model = EventTransformer(cfg.model, sizes, cfg.window.max_len + cfg.model.eos_slots, seed=cfg.seed)
    collator = MaskingCollator(
        cfg.masking,
        sizes[EVENT_FIELD],
        cfg.model.predict_fields,
        seed=cfg.seed,
        end_slots=cfg.model.eos_slots,
    )
    source = MaskedWindowSource(encoded, windows, train_w, collator, cfg.train.batch_size, cfg.seed, info)
    unigram = int(np.argmax(np.asarray(vocab.event_token_counts())))
    evaluator = None
    if len(val_w):
        evaluator = MaskedEvaluator(
            encoded,
            windows,
            val_w,
            cfg.masking.mask_prob,
            4 * cfg.train.batch_size,
            unigram,
            info.device,
            info,
            trim_fraction=cfg.train.trim_fraction,
            end_slots=cfg.model.eos_slots,
        )
    trainer = Trainer(
        model,
        cfg.train,
        source,
        masked_event_loss(cfg.train.trim_fraction, cfg.train.trim_start),
        eval_fn=evaluator,
        out_dir=None if rd is None else rd.path,
        device=info.device,
        seed=cfg.seed,
        callbacks=callbacks or [],
        dist_info=info,
        monitor=cfg.train.early_stopping_metric,
    )
    return model, evaluator, trainer


def _write_setup(rd: RunDir, cfg: Config, vocab: Any, resume: bool) -> None:
    from .config_loader import dump_config

    rd.path.mkdir(parents=True, exist_ok=True)
    if not resume and rd.checkpoint_dir.joinpath("last.pt").exists():
        log.warning("%s already holds a checkpoint; starting over (use resume to continue)", rd.path)
    atomic_write_text(rd.config_path, dump_config(cfg))
    if not (resume and rd.vocab_path.exists()):
        vocab.save(rd.vocab_path)


def save_weights(model: EventTransformer, path: str | Path) -> None:
    """Write the model's weights as safetensors, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "anomaly-ssl-event-transformer"})


def build_card(
    cfg: Config,
    model: EventTransformer,
    encoded: EncodedSequences,
    counts: dict[str, int],
    result: TrainResult,
    final: dict[str, float],
    data_path: str | Path | None,
    info: DistInfo,
    wall_s: float,
) -> dict[str, Any]:
    """The model card: data counts, architecture, training and validation summary, versions."""
    d, layers, heads, ff = cfg.model.resolved()
    st = result.state
    lengths = encoded.lengths
    return {
        "format": CARD_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {
            "path": None if data_path is None else str(Path(data_path).resolve()),
            "n_sequences": len(encoded),
            "n_events": int(lengths.sum()),
            **counts,
            "mean_length": float(lengths.mean()) if len(lengths) else 0.0,
            "max_length": int(lengths.max()) if len(lengths) else 0,
            "fields": list(encoded.field_names),
        },
        "model": {
            "size": cfg.model.size,
            "d_model": d,
            "n_layers": layers,
            "n_heads": heads,
            "d_ff": ff,
            "n_params": model.n_params(),
            "max_len": model.max_len,
            "field_sizes": dict(model.field_sizes),
            "pooling": cfg.model.pooling,
            "predict_fields": list(cfg.model.predict_fields),
            "add_eos": cfg.model.add_eos,
        },
        "training": {
            "steps": st.step,
            "total_steps": result.total_steps,
            "epochs": st.epoch + (st.batch_in_epoch > 0),
            "best_step": st.best_step,
            "stopped_early": st.stopped_early,
            "resumed_from_step": result.resumed_from_step,
            "wall_time_s": round(wall_s, 3),
            "train_time_s": round(st.train_time_s, 3),
            "tokens_per_s": round(st.tokens_per_s * info.world_size, 1),  # all ranks together
            "trim_fraction": cfg.train.trim_fraction,
        },
        "validation": {
            "val_loss": final.get("val_loss"),
            "val_loss_all": final.get("val_loss_all"),
            "val_masked_accuracy": final.get("val_acc"),
            "val_unigram_accuracy": final.get("val_unigram_acc"),
            "val_masked_positions": int(final.get("val_masked_positions", 0)),
        },
        "versions": {
            "anomaly_ssl": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "device": {
            "type": info.device.type,
            "name": _device_name(info.device),
            "world_size": info.world_size,
            "torch_threads": torch.get_num_threads(),
        },
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def load_model(
    run_dir: str | Path, device: torch.device | str = "cpu"
) -> tuple[EventTransformer, Any, Config]:
    """Rebuild the trained model of a run directory.

    Returns
    -------
    model : EventTransformer
        In eval mode, on ``device``.
    vocab : Vocabulary
    cfg : Config
        The run's saved configuration.
    """
    from safetensors.torch import load_file

    from .config_loader import load_config
    from .data import Vocabulary

    rd = RunDir(run_dir)
    rd.require(
        rd.config_path,
        rd.vocab_path,
        rd.weights_path,
        rd.card_path,
        hint="did `anomaly-ssl pretrain` finish?",
    )
    cfg = load_config(None, [], base=rd.read_config_dict())
    card = read_json(rd.card_path)
    if card.get("format") != CARD_FORMAT:
        raise RunDirError(f"{rd.card_path}: not an anomaly-ssl model card (format {card.get('format')!r})")
    spec = card["model"]
    sizes = {k: int(v) for k, v in spec["field_sizes"].items()}
    model = EventTransformer(cfg.model, sizes, int(spec["max_len"]))
    model.load_state_dict(load_file(str(rd.weights_path)))
    model.to(torch.device(device)).eval()
    return model, Vocabulary.load(rd.vocab_path), cfg
