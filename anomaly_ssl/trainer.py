"""A generic, resumable training loop (minGPT style): it knows nothing about events.

The loop takes a model, a :class:`BatchSource` (random access to the batches of
each epoch, so a resumed run skips exactly what was done), a loss function and
an optional evaluation function returning a dict of metrics.  It runs AdamW with
linear warm-up and cosine decay, gradient accumulation and clipping, mixed
precision on CUDA, validation with early stopping (the best weights are kept),
atomic checkpoints that ``torch.load(weights_only=True)`` can read, a CSV
metrics log, a progress bar and callbacks.  The global torch RNG (dropout) is
forked for the duration of :meth:`Trainer.fit`, seeded from ``seed`` and saved
in checkpoints, so on the CPU an interrupted and resumed run ends with
bit-identical weights.  Under ``torchrun`` the model is wrapped in
DistributedDataParallel and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from .config import TrainConfig
from .device import autocast_dtype
from .distributed import DistInfo, all_reduce_sum, barrier
from .errors import DataError, ModelError, RunDirError
from .io import atomic_path
from .logs import progress

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "anomaly-ssl-trainer/1"
METRIC_COLUMNS = ("step", "epoch", "lr", "train_loss", "val_loss", "val_acc", "tokens_per_s", "elapsed_s")


class BatchSource(Protocol):
    """Random access to the (micro-)batches of every epoch; the same on every call."""

    def num_batches(self, epoch: int) -> int:
        """Micro-batches in ``epoch`` (the same number on every rank)."""
        ...

    def get(self, epoch: int, index: int) -> Any:
        """Batch ``index`` of ``epoch``: an object with ``.to(device)``, a tensor or a dict of tensors."""
        ...


#: ``loss_fn(model, batch, progress) -> scalar loss``; ``progress`` = step / total_steps in [0, 1].
#: A loss function with ``state_dict()`` / ``load_state_dict()`` has that state checkpointed too.
LossFn = Callable[[nn.Module, Any, float], torch.Tensor]
#: ``eval_fn(model) -> {"val_loss": ..., ...}`` (model in eval mode, gradients off)
EvalFn = Callable[[nn.Module], dict[str, float]]


class StopTraining(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a callback to end training cleanly after the current step (state is saved)."""


@dataclass
class TrainState:
    """Everything about the loop's position that a checkpoint restores (primitives only)."""

    step: int = 0
    epoch: int = 0
    #: micro-batches of ``epoch`` already consumed
    batch_in_epoch: int = 0
    best_metric: float = math.inf
    best_step: int = -1
    bad_evals: int = 0
    stopped_early: bool = False
    tokens: int = 0
    #: time spent in training steps (excludes evaluation and checkpoints), over all sessions
    train_time_s: float = 0.0
    elapsed_s: float = 0.0
    last_train_loss: float = math.nan
    last_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_time_s if self.train_time_s > 0 else 0.0


class Callback:
    """Hooks called by :class:`Trainer` (override what you need; may raise :class:`StopTraining`)."""

    def on_step_end(self, trainer: Trainer, state: TrainState, logs: dict[str, float]) -> None:
        """After each optimiser step (and its evaluation/checkpoint, if any)."""

    def on_eval_end(self, trainer: Trainer, state: TrainState, metrics: dict[str, float]) -> None:
        """After each evaluation; ``metrics`` from the eval function."""

    def on_checkpoint(self, trainer: Trainer, state: TrainState, path: Path) -> None:
        """After a checkpoint was written (rank 0 only)."""

    def on_train_end(self, trainer: Trainer, state: TrainState) -> None:
        """Once, after the loop (best weights already restored)."""


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`."""

    state: TrainState
    total_steps: int
    history: list[dict[str, float]]
    resumed_from_step: int | None = None

    @property
    def best_step(self) -> int:
        return self.state.best_step


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warm-up, then cosine decay."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return base_lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only (not on biases, norms or embeddings)."""
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.LayerNorm)):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    decay, rest = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (rest if p.dim() < 2 or id(p) in no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def move_to(batch: Any, device: torch.device) -> Any:
    """Move a batch (``.to``-able object, tensor, or dict/list/tuple of them) to ``device``."""
    if hasattr(batch, "to"):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


class Trainer:
    """Train ``model`` on ``source`` with ``loss_fn``.

    Parameters
    ----------
    model : nn.Module
    cfg : TrainConfig
    source : BatchSource
        This rank's batches.
    loss_fn : callable
        ``loss_fn(model, batch, progress) -> scalar``; ``model`` may be the DDP wrapper,
        so call it (``forward``) rather than other methods.
    eval_fn : callable, optional
        ``eval_fn(model) -> dict`` with at least ``monitor``; called every
        ``cfg.eval_every`` steps, or after every epoch when that is None.
    out_dir : str or Path, optional
        Where ``checkpoints/last.pt`` and ``metrics.csv`` go (rank 0); None = no files.
    device : torch.device
    seed : int
        Seed of the global torch RNG during training (dropout).
    callbacks : sequence of Callback
    monitor : str
        Metric that early stopping minimises.
    dist_info : DistInfo, optional
        Rank/world size; when ``world_size > 1`` the model is wrapped in DDP.
    tokens_fn : callable, optional
        Tokens in a batch, for throughput (default: ``batch.n_tokens`` or 0).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        source: BatchSource,
        loss_fn: LossFn,
        *,
        eval_fn: EvalFn | None = None,
        out_dir: str | Path | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        callbacks: Sequence[Callback] = (),
        monitor: str = "val_loss",
        dist_info: DistInfo | None = None,
        tokens_fn: Callable[[Any], int] | None = None,
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.model = model
        self.source = source
        self.loss_fn = loss_fn
        self.eval_fn = eval_fn
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = torch.device(device)
        self.seed = int(seed)
        self.callbacks = list(callbacks)
        self.monitor = monitor
        self.dist = dist_info or DistInfo(device=self.device)
        self.tokens_fn = tokens_fn or (lambda b: int(getattr(b, "n_tokens", 0)))
        self.amp_dtype = autocast_dtype(self.device, cfg.precision)
        steps_per_epoch = math.ceil(source.num_batches(0) / cfg.grad_accum)
        if steps_per_epoch < 1:
            raise DataError("no training batches: the training set is empty")
        self.steps_per_epoch = steps_per_epoch
        # whichever comes first: max_steps or max_epochs (the schedule spans exactly that)
        self.total_steps = steps_per_epoch * cfg.max_epochs
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.warmup_steps = round(cfg.warmup_ratio * self.total_steps)
        self.model.to(self.device)
        self.optimizer = torch.optim.AdamW(
            param_groups(model, cfg.weight_decay),
            lr=cfg.lr,
            betas=(0.9, 0.98),
            **_fast_adam_kwargs(self.device),
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.state = TrainState()
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []

    # ---------------------------------------------------------------- paths
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoints" / "last.pt"

    @property
    def metrics_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "metrics.csv"

    # ---------------------------------------------------------------- main loop
    def fit(self, resume: bool = False) -> TrainResult:
        """Run (or continue) training; return with the best weights loaded into ``self.model``."""
        resumed_from = None
        with torch.random.fork_rng(devices=_rng_devices(self.device)):
            torch.manual_seed(self.seed)
            if resume:
                resumed_from = self._try_resume()
            self._prepare_metrics_log()
            wrapped = self._wrap(self.model)
            try:
                self._loop(wrapped)
            except StopTraining:
                log.info("training stopped by a callback at step %d", self.state.step)
                self._checkpoint()
            if self.best_weights is not None:
                self.model.load_state_dict(self.best_weights)
        barrier(self.dist)
        for cb in self.callbacks:
            cb.on_train_end(self, self.state)
        return TrainResult(self.state, self.total_steps, self.history, resumed_from)

    def _loop(self, wrapped: nn.Module) -> None:
        cfg, st = self.cfg, self.state
        t_start = time.perf_counter() - st.elapsed_s
        quiet = {} if self.dist.is_main else {"disable": True}
        bar = progress(total=self.total_steps, initial=st.step, desc="train", unit="step", **quiet)
        # the loss stays a device tensor between log steps: no host sync per step on a GPU
        loss_sum, loss_n, tokens_window, time_window = torch.zeros((), device=self.device), 0, 0, 0.0
        try:
            while not self._finished():
                nb = self.source.num_batches(st.epoch)
                group = range(st.batch_in_epoch, min(st.batch_in_epoch + cfg.grad_accum, nb))
                t0 = time.perf_counter()
                loss, tokens = self._step(wrapped, st.epoch, group)
                dt = time.perf_counter() - t0
                st.step += 1
                st.batch_in_epoch += len(group)
                st.tokens += tokens
                st.train_time_s += dt
                loss_sum, loss_n = loss_sum + loss, loss_n + 1
                tokens_window, time_window = tokens_window + tokens, time_window + dt
                epoch_done = st.batch_in_epoch >= nb
                if epoch_done:
                    st.epoch += 1
                    st.batch_in_epoch = 0
                logs: dict[str, float] = {}
                if st.step % cfg.log_every == 0 or self._finished():
                    tps = self._global_rate(tokens_window, time_window)
                    st.last_train_loss = float(loss_sum) / max(loss_n, 1)
                    self._check_finite(st.last_train_loss)
                    logs = {"train_loss": st.last_train_loss, "tokens_per_s": tps}
                    bar.set_postfix(loss=f"{st.last_train_loss:.4f}", tok_s=f"{tps:,.0f}")
                    loss_sum, loss_n, tokens_window, time_window = loss_sum.zero_(), 0, 0, 0.0
                bar.update(1)
                due = (cfg.eval_every is not None and st.step % cfg.eval_every == 0) or (
                    cfg.eval_every is None and epoch_done
                )
                if self.eval_fn is not None and (due or self._finished()):
                    logs.update(self._evaluate())
                st.elapsed_s = time.perf_counter() - t_start
                if logs:
                    self._log_row(logs)
                if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0 and not self._finished():
                    self._checkpoint()
                for cb in self.callbacks:
                    cb.on_step_end(self, st, logs)
            st.elapsed_s = time.perf_counter() - t_start
            self._checkpoint()
        finally:
            bar.close()

    def _finished(self) -> bool:
        st = self.state
        return st.stopped_early or st.step >= self.total_steps or st.epoch >= self.cfg.max_epochs

    def _check_finite(self, loss: float) -> None:
        if not math.isfinite(loss) and self.amp_dtype != torch.float16:  # fp16: the scaler skips such steps
            raise ModelError(
                f"training diverged: the loss is {loss} at step {self.state.step}; "
                f"lower train.lr (now {self.cfg.lr}) or raise train.warmup_ratio"
            )

    def _step(self, wrapped: nn.Module, epoch: int, group: range) -> tuple[torch.Tensor, int]:
        """One optimiser step over the micro-batches ``group``; returns (mean loss, tokens)."""
        lr = lr_at(self.state.step, self.cfg.lr, self.warmup_steps, self.total_steps, self.cfg.min_lr_ratio)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        wrapped.train()
        progress_frac = self.state.step / max(1, self.total_steps)
        total_loss = torch.zeros((), device=self.device)
        tokens = 0
        for j, index in enumerate(group):
            batch = self.source.get(epoch, index)
            tokens += self.tokens_fn(batch)
            batch = move_to(batch, self.device)
            last = j == len(group) - 1
            sync = contextlib.nullcontext() if last or not self.dist.enabled else wrapped.no_sync()
            with sync:
                with self._autocast():
                    loss = self.loss_fn(wrapped, batch, progress_frac) / len(group)
                self.scaler.scale(loss).backward()
            total_loss += loss.detach()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return total_loss, tokens

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _wrap(self, model: nn.Module) -> nn.Module:
        if not self.dist.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def _global_rate(self, tokens: int, seconds: float) -> float:
        if self.dist.enabled:
            tokens = int(all_reduce_sum(torch.tensor([tokens], dtype=torch.float64), self.dist).item())
        return tokens / seconds if seconds > 0 else 0.0

    # ---------------------------------------------------------------- evaluation
    def _evaluate(self) -> dict[str, float]:
        assert self.eval_fn is not None
        st = self.state
        self.model.eval()
        try:
            with torch.no_grad(), self._autocast():
                metrics = {k: float(v) for k, v in self.eval_fn(self.model).items()}
        finally:
            self.model.train()
        if self.monitor not in metrics:
            raise KeyError(
                f"eval_fn returned {sorted(metrics)}, without the monitored metric {self.monitor!r}"
            )
        value = metrics[self.monitor]
        if value < st.best_metric:
            st.best_metric, st.best_step, st.bad_evals = value, st.step, 0
            self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            st.bad_evals += 1
            if self.cfg.patience and st.bad_evals >= self.cfg.patience:
                st.stopped_early = True
                log.info(
                    "early stop at step %d: %s did not improve on %.4f (step %d) for %d evaluations",
                    st.step,
                    self.monitor,
                    st.best_metric,
                    st.best_step,
                    st.bad_evals,
                )
        st.last_metrics = metrics
        for cb in self.callbacks:
            cb.on_eval_end(self, st, metrics)
        return metrics

    # ---------------------------------------------------------------- logging
    def _prepare_metrics_log(self) -> None:
        """Keep the rows up to the resumed step (a crashed run may have logged further)."""
        path = self.metrics_path
        if path is None or not self.dist.is_main:
            return
        rows: list[dict[str, str]] = []
        if path.exists() and self.state.step > 0:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.DictReader(fh) if int(float(r["step"])) <= self.state.step]
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def _log_row(self, logs: dict[str, float]) -> None:
        st = self.state
        row = {
            "step": st.step,
            "epoch": st.epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": logs.get("train_loss", ""),
            "val_loss": logs.get("val_loss", ""),
            "val_acc": logs.get("val_acc", ""),
            "tokens_per_s": logs.get("tokens_per_s", ""),
            "elapsed_s": round(st.elapsed_s, 3),
        }
        self.history.append({k: v for k, v in (row | logs).items() if v != ""})
        log.debug("step %d: %s", st.step, logs)
        path = self.metrics_path
        if path is not None and self.dist.is_main:
            with open(path, "a", newline="", encoding="utf-8") as fh:
                csv.DictWriter(fh, fieldnames=METRIC_COLUMNS).writerow(row)

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The full resumable state: tensors and primitives only (``weights_only`` loadable)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {
                "base_lr": self.cfg.lr,
                "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps,
                "min_lr_ratio": self.cfg.min_lr_ratio,
            },
            "scaler": self.scaler.state_dict(),
            "state": dataclasses.asdict(self.state),
            "best_model": self.best_weights,
            "rng": _rng_state(self.device),
            "objective": self._objective_states(),
        }

    def _objective_states(self) -> list[Any] | None:
        """The loss function's own state (e.g. a loss history), one entry per rank.

        Collective under DDP: every rank must call it (all ranks checkpoint together).
        """
        get = getattr(self.loss_fn, "state_dict", None)
        if get is None:
            return None
        state = get()
        if not self.dist.enabled:
            return [state]
        gathered: list[Any] = [None] * self.dist.world_size
        torch.distributed.all_gather_object(gathered, state)
        return gathered

    def _checkpoint(self) -> None:
        path = self.checkpoint_path
        if path is None:
            return
        ckpt = self.state_dict()  # on every rank: the objective states are gathered
        if not self.dist.is_main:
            return
        with atomic_path(path) as tmp:
            torch.save(ckpt, tmp)
        for cb in self.callbacks:
            cb.on_checkpoint(self, self.state, path)

    def _try_resume(self) -> int | None:
        path = self.checkpoint_path
        if path is None or not path.exists():
            log.warning("resume requested but no checkpoint at %s; starting from scratch", path)
            return None
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise RunDirError(
                f"{path}: not an anomaly-ssl trainer checkpoint (format {ckpt.get('format')!r})"
            )
        sched = ckpt["scheduler"]
        if sched["total_steps"] != self.total_steps:
            raise RunDirError(
                f"{path}: checkpoint was made for {sched['total_steps']} steps but this run plans "
                f"{self.total_steps}; resume with the run's saved config (no --config/--set changes "
                "to train.* or the data)"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.best_weights = ckpt["best_model"]
        fields = {f.name for f in dataclasses.fields(TrainState)}
        self.state = TrainState(**{k: v for k, v in ckpt["state"].items() if k in fields})
        _set_rng_state(ckpt["rng"], self.device)
        objective = ckpt.get("objective")
        if objective and hasattr(self.loss_fn, "load_state_dict"):
            if len(objective) != self.dist.world_size:
                log.warning(
                    "checkpoint made by %d process(es), resuming with %d: the loss history "
                    "of rank 0 is used everywhere",
                    len(objective),
                    self.dist.world_size,
                )
            self.loss_fn.load_state_dict(objective[self.dist.rank % len(objective)])
        log.info("resumed from %s at step %d (epoch %d)", path, self.state.step, self.state.epoch)
        return self.state.step


def _fast_adam_kwargs(device: torch.device) -> dict[str, Any]:
    # the fused kernel exists for CUDA and (torch >= 2.4) the CPU; it is much faster for small models
    return {"fused": True} if device.type in ("cuda", "cpu") else {}


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def _rng_state(device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)

