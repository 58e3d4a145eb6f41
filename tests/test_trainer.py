"""The generic training loop on a toy regression problem (it knows nothing about events)."""

from __future__ import annotations

import csv
import itertools
import math

import pytest
import torch
from test_model import _one_thread  # noqa: F401
from torch import nn

from anomaly_ssl.config import TrainConfig
from anomaly_ssl.errors import DataError, ModelError
from anomaly_ssl.trainer import METRIC_COLUMNS, Callback, StopTraining, Trainer, lr_at, param_groups


class ToySource:
    """Deterministic regression batches: y = x @ w_true + noise; batch (epoch, i) is fixed."""

    def __init__(self, n_batches: int = 6, batch: int = 16) -> None:
        self.n, self.batch = n_batches, batch
        self.w = torch.randn(8, 1, generator=torch.Generator().manual_seed(0))

    def num_batches(self, epoch: int) -> int:
        return self.n

    def get(self, epoch: int, index: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(1000 * epoch + index)
        x = torch.randn(self.batch, 8, generator=g)
        return {"x": x, "y": x @ self.w + 0.1 * torch.randn(self.batch, 1, generator=g)}


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = nn.Embedding(3, 8)  # unused by the maths, checks the no-decay group
        layers = [nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.LayerNorm(16), nn.Linear(16, 1)]
        self.net = nn.Sequential(*layers)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mse(model, batch, progress):
    return ((model(batch["x"]) - batch["y"]) ** 2).mean()


def val_fn(model):
    batch = ToySource().get(99, 0)
    return {"val_loss": float(mse(model, batch, 1.0)), "val_acc": 0.0}


def cfg(**kw) -> TrainConfig:
    base = dict(
        batch_size=16,
        lr=0.05,
        max_epochs=4,
        grad_accum=2,
        eval_every=2,
        patience=0,
        checkpoint_every=2,
        log_every=1,
        warmup_ratio=0.2,
        trim_fraction=0.0,
    )
    return TrainConfig(**(base | kw))


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Crash(Callback):
    def __init__(self, at: int, exc: type[BaseException] = RuntimeError) -> None:
        self.at, self.exc = at, exc

    def on_step_end(self, trainer, state, logs):
        if state.step == self.at:
            raise self.exc("simulated interruption")


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 1.0, 10, 100, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in itertools.pairwise(lrs[:10]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_no_weight_decay_on_biases_norms_and_embeddings():
    model = Toy()
    decay, rest = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    ids = {id(p) for p in decay["params"]}
    assert ids == {id(model.net[0].weight), id(model.net[4].weight)}


def test_training_is_deterministic_and_reduces_loss(tmp_path):
    a, b = Toy(), Toy()
    ra = Trainer(a, cfg(), ToySource(), mse, eval_fn=val_fn, seed=3).fit()
    Trainer(b, cfg(), ToySource(), mse, eval_fn=val_fn, seed=3).fit()
    assert same(weights(a), weights(b))
    losses = [h["train_loss"] for h in ra.history if "train_loss" in h]
    assert losses[-1] < 0.5 * losses[0]
    c = Toy()
    Trainer(c, cfg(), ToySource(), mse, eval_fn=val_fn, seed=4).fit()  # other dropout draws
    assert not same(weights(a), weights(c))


@pytest.mark.parametrize("crash_at", [5, 6])
def test_resume_gives_bit_identical_weights(tmp_path, crash_at):
    # uninterrupted reference
    ref = Toy()
    Trainer(ref, cfg(), ToySource(), mse, eval_fn=val_fn, out_dir=tmp_path / "ref", seed=1).fit()
    # crash after step `crash_at` (last checkpoint at step 4 or 6), then resume in a fresh model
    first = Toy()
    with pytest.raises(RuntimeError, match="simulated"):
        Trainer(
            first,
            cfg(),
            ToySource(),
            mse,
            eval_fn=val_fn,
            out_dir=tmp_path / "run",
            seed=1,
            callbacks=[Crash(crash_at)],
        ).fit()
    resumed = Toy()
    result = Trainer(resumed, cfg(), ToySource(), mse, eval_fn=val_fn, out_dir=tmp_path / "run", seed=1).fit(
        resume=True
    )
    assert result.resumed_from_step == (crash_at // 2) * 2
    assert same(weights(ref), weights(resumed))
    ckpt_ref = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=True)
    ckpt_run = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert same(ckpt_ref["model"], ckpt_run["model"]) and ckpt_run["state"]["step"] == 12
    # the metrics log has each step once, in order, with the documented columns
    with open(tmp_path / "run" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(METRIC_COLUMNS)
    assert METRIC_COLUMNS == (
        "step",
        "epoch",
        "lr",
        "train_loss",
        "val_loss",
        "val_acc",
        "tokens_per_s",
        "elapsed_s",
    )
    steps = [int(r["step"]) for r in rows]
    assert steps == list(range(1, 13))


def test_stop_training_saves_state_and_resume_finishes_identically(tmp_path):
    ref = Toy()
    Trainer(ref, cfg(eval_every=None), ToySource(), mse, eval_fn=val_fn, seed=2).fit()
    part = Toy()
    t = Trainer(
        part,
        cfg(eval_every=None),
        ToySource(),
        mse,
        eval_fn=val_fn,
        out_dir=tmp_path,
        seed=2,
        callbacks=[Crash(5, StopTraining)],
    )
    assert t.fit().state.step == 5
    resumed = Toy()
    Trainer(resumed, cfg(eval_every=None), ToySource(), mse, eval_fn=val_fn, out_dir=tmp_path, seed=2).fit(
        resume=True
    )
    assert same(weights(ref), weights(resumed))


def test_early_stopping_keeps_the_best_weights(tmp_path):
    scores = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8, 2.9])
    snapshots = {}

    class Snap(Callback):
        def on_eval_end(self, trainer, state, metrics):
            snapshots[state.step] = weights(trainer.model)

    model = Toy()
    result = Trainer(
        model,
        cfg(eval_every=1, patience=2, max_epochs=10),
        ToySource(),
        mse,
        eval_fn=lambda m: {"val_loss": next(scores)},
        callbacks=[Snap()],
    ).fit()
    st = result.state
    assert st.stopped_early and st.best_step == 2 and st.step == 4 and st.best_metric == 2.0
    assert same(weights(model), snapshots[2])


def test_checkpoint_is_weights_only_loadable(tmp_path):
    Trainer(Toy(), cfg(max_epochs=1), ToySource(), mse, eval_fn=val_fn, out_dir=tmp_path).fit()
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "state", "rng", "best_model"} <= set(ckpt)
    assert ckpt["state"]["step"] == 3 and ckpt["state"]["epoch"] == 1
    assert math.isfinite(ckpt["state"]["best_metric"])


def test_empty_source_is_a_data_error():
    with pytest.raises(DataError, match="training set is empty"):
        Trainer(Toy(), cfg(), ToySource(n_batches=0), mse)


def test_a_diverged_loss_is_a_clear_error():
    def nan_loss(model, batch, progress):
        return mse(model, batch, progress) * float("nan")

    with pytest.raises(ModelError, match=r"training diverged.*lower train\.lr"):
        Trainer(Toy(), cfg(), ToySource(), nan_loss).fit()
