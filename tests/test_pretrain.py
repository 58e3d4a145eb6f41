"""The pretraining pipeline: learning, exact resume, trimmed loss, run directory, CLI."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from click.testing import CliRunner
from test_model import GrammarVocab, _one_thread, grammar_sequences  # noqa: F401

from anomaly_ssl.cli import cli
from anomaly_ssl.config import Config, ModelConfig, WindowConfig
from anomaly_ssl.config_loader import load_config
from anomaly_ssl.embed import embed_sequences
from anomaly_ssl.errors import RunDirError
from anomaly_ssl.masking import MaskedBatch
from anomaly_ssl.model import EventTransformer
from anomaly_ssl.pretrain import (
    MaskedEvaluator,
    load_model,
    masked_event_loss,
    pretrain,
    pretrain_encoded,
    split_sequences,
)
from anomaly_ssl.run import RunDir
from anomaly_ssl.trainer import Callback
from anomaly_ssl.windows import make_windows


def small_cfg(**train) -> Config:
    cfg = Config()
    cfg.model = ModelConfig(size="tiny", dropout=0.1)
    cfg.window = WindowConfig(max_len=16)
    cfg.device = "cpu"
    cfg.seed = 5
    for k, v in (
        {"batch_size": 16, "max_epochs": 2, "lr": 3e-3, "log_every": 2, "patience": 0} | train
    ).items():
        setattr(cfg.train, k, v)
    return cfg


def test_loss_falls_and_beats_the_unigram_baseline():
    enc = grammar_sequences(n=200, seed=3)
    cfg = small_cfg(max_epochs=8, trim_fraction=0.0)
    cfg.model.dropout = 0.0
    result = pretrain_encoded(enc, GrammarVocab(enc), cfg)
    losses = [h["train_loss"] for h in result.train.history if "train_loss" in h]
    assert losses[-1] < 0.6 * losses[0]
    v = result.card["validation"]
    assert v["val_masked_accuracy"] > v["val_unigram_accuracy"] + 0.15
    assert result.run_dir is None and len(result.val_index) == 20
    assert set(result.train_index).isdisjoint(result.val_index)


class Crash(Callback):
    def on_step_end(self, trainer, state, logs):
        if state.step == 7:
            raise KeyboardInterrupt


def test_interrupted_and_resumed_run_ends_bit_identical(tmp_path):
    enc = grammar_sequences(n=120, seed=4)
    # dropout, trimmed loss, accumulation, evaluation and early-stopping state all in play
    cfg = small_cfg(
        grad_accum=2, eval_every=3, checkpoint_every=3, trim_fraction=0.2, trim_start=0.3, patience=5
    )
    ref = pretrain_encoded(enc, GrammarVocab(enc), cfg, tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        pretrain_encoded(enc, GrammarVocab(enc), cfg, tmp_path / "run", callbacks=[Crash()])
    resumed = pretrain_encoded(enc, GrammarVocab(enc), cfg, tmp_path / "run", resume=True)
    assert resumed.card["training"]["resumed_from_step"] == 6
    assert (tmp_path / "ref" / "model.safetensors").read_bytes() == (
        tmp_path / "run" / "model.safetensors"
    ).read_bytes()
    a = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["state"]["step"] == b["state"]["step"] == ref.train.state.step


class FixedLossModel(torch.nn.Module):
    """Returns preset per-sequence losses (to test the objective in isolation)."""

    def __init__(self, losses: list[float]) -> None:
        super().__init__()
        self.losses = torch.tensor(losses)

    def forward(self, inputs, mask, labels, reduction, return_logits):
        assert reduction == "sequence" and not return_logits
        return None, self.losses


def fixed_batch(n_masked: list[int]) -> MaskedBatch:
    labels = torch.full((len(n_masked), 6), -100)
    for i, n in enumerate(n_masked):
        labels[i, 1 : 1 + n] = 7
    return MaskedBatch({}, torch.ones(len(n_masked), 6, dtype=torch.bool), {"event": labels})


def test_objective_is_the_token_weighted_masked_loss():
    batch = fixed_batch([2, 1, 1, 1])
    plain = masked_event_loss(0.0)(FixedLossModel([1.0, 2.0, 9.0, 3.0]), batch, 1.0)
    assert plain.item() == pytest.approx((2 * 1 + 2 + 9 + 3) / 5)


def test_trimmed_loss_drops_a_cluster_of_high_loss_windows():
    objective = masked_event_loss(0.25, trim_start=0.5, history=64, min_history=32)
    for _ in range(8):  # normal batches
        objective(FixedLossModel([1.0] * 8), fixed_batch([1] * 8), 0.1)
    # a batch where 3 of 8 windows (a ring of near-identical anomalies, same length) have high
    # loss: more than the 25% a per-batch top-k would drop (2), yet all of them are ignored
    losses = [1.0, 6.0, 1.0, 6.1, 1.0, 5.9, 1.0, 1.0]
    batch = fixed_batch([1] * 8)
    before = masked_event_loss(0.25, trim_start=0.5, history=64, min_history=32)
    before.load_state_dict(objective.state_dict())
    assert before(FixedLossModel(losses), batch, 0.4).item() == pytest.approx(np.mean(losses))  # not yet
    assert objective(FixedLossModel(losses), batch, 0.6).item() == pytest.approx(1.0)
    # no trimming at all when switched off
    assert masked_event_loss(0.0)(FixedLossModel(losses), batch, 0.9).item() == pytest.approx(np.mean(losses))
    state = objective.state_dict()
    assert state["seen"] == 72 and state["losses"].shape == (64,)


def test_split_is_by_sequence_and_seeded():
    tr, va = split_sequences(100, 0.1, seed=1)
    assert len(va) == 10 and len(tr) == 90 and set(tr).isdisjoint(va)
    assert np.array_equal(va, split_sequences(100, 0.1, seed=1)[1])
    assert not np.array_equal(va, split_sequences(100, 0.1, seed=2)[1])
    assert len(split_sequences(5, 0.0, 0)[1]) == 0


# ----------------------------------------------------------------------------- files and CLI


def write_events(path, n_users: int = 60, seed: int = 0) -> None:
    """An event table: each user has two sessions (an hour apart) cycling through a pattern."""
    rng = np.random.default_rng(seed)
    patterns = [["login", "view", "cart", "buy"], ["search", "view", "view", "wish"], ["login", "logout"]]
    rows = []
    for u in range(n_users):
        for s in range(2):
            pat = patterns[int(rng.integers(len(patterns)))]
            t0 = 1_700_000_000 + u * 10_000 + s * 3_600
            for i in range(int(rng.integers(4, 14))):
                rows.append((f"u{u}", t0 + 20 * i, pat[i % len(pat)], "mobile" if u % 2 else "desktop"))
    pl.DataFrame(rows, schema=["user_id", "ts", "event", "device"], orient="row").write_parquet(path)


TINY_SETS = [
    "--set",
    "data.categorical=[device]",
    "--set",
    "data.numeric=[]",
    "--set",
    "train.max_steps=12",
    "--set",
    "train.eval_every=4",
    "--set",
    "train.checkpoint_every=4",
    "--set",
    "window.max_len=16",
    "--set",
    "device=cpu",
    "--set",
    "train.max_epochs=5",
]


def test_cli_pretrain_writes_a_complete_run_directory_and_resumes(tmp_path):
    data = tmp_path / "events.parquet"
    write_events(data)
    run = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(
        cli, ["--config", "tiny", "pretrain", "--data", str(data), "--run", str(run), *TINY_SETS]
    )
    assert res.exit_code == 0, res.output
    assert "val masked accuracy" in res.output
    rd = RunDir(run)
    for p in (
        rd.config_path,
        rd.vocab_path,
        rd.weights_path,
        rd.metrics_path,
        rd.card_path,
        rd.checkpoint_dir / "last.pt",
    ):
        assert p.is_file(), p
    card = json.loads(rd.card_path.read_text())
    assert card["data"]["path"] == str(data.resolve())
    assert card["data"]["n_sequences"] == 120 and card["data"]["n_val_sequences"] == 12
    assert card["data"]["n_events"] > 0 and card["data"]["n_windows"] >= 120
    assert (
        card["model"]["size"] == "tiny" and card["model"]["n_params"] > 0 and card["model"]["d_model"] == 32
    )
    assert set(card["model"]["field_sizes"]) == {"event", "device", "gap"}
    assert card["training"]["steps"] == 12 and card["training"]["best_step"] > 0
    assert card["training"]["tokens_per_s"] > 0 and card["training"]["wall_time_s"] > 0
    v = card["validation"]
    assert 0 <= v["val_unigram_accuracy"] <= 1 and 0 <= v["val_masked_accuracy"] <= 1 and v["val_loss"] > 0
    assert card["versions"]["torch"] == torch.__version__ and card["device"]["type"] == "cpu"
    ckpt = torch.load(rd.checkpoint_dir / "last.pt", weights_only=True)
    assert ckpt["state"]["step"] == 12
    header = rd.metrics_path.read_text().splitlines()[0]
    assert header == "step,epoch,lr,train_loss,val_loss,val_acc,tokens_per_s,elapsed_s"
    # --resume without --config reuses the run's config (the tiny-data overrides included)
    res = runner.invoke(cli, ["pretrain", "--data", str(data), "--run", str(run), "--resume"])
    assert res.exit_code == 0, res.output
    card2 = json.loads(rd.card_path.read_text())
    assert card2["training"]["resumed_from_step"] == 12 and card2["training"]["steps"] == 12


def test_saved_model_reloads_with_identical_embeddings(tmp_path):
    data = tmp_path / "events.parquet"
    write_events(data, n_users=30, seed=1)
    sets = [s for s in TINY_SETS if s != "--set"]
    cfg = load_config("tiny", sets)
    result = pretrain(data, cfg, tmp_path / "run")
    model, vocab, cfg2 = load_model(tmp_path / "run")
    assert cfg2 == cfg and vocab.sizes() == result.vocab.sizes()
    a = embed_sequences(result.model, result.encoded, cfg.window)
    b = embed_sequences(model, result.encoded, cfg.window)
    assert a.shape == (60, 32) and np.array_equal(a, b)


def test_load_model_on_a_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_evaluator_scores_every_position_once_and_trims_like_training():
    enc = grammar_sequences(n=30, seed=6)
    windows = make_windows(enc.lengths, WindowConfig(max_len=16), add_eos=True)
    model = EventTransformer(ModelConfig(size="tiny"), GrammarVocab(enc).sizes(), 16).eval()
    plain = MaskedEvaluator(enc, windows, np.arange(len(windows)), 0.15, 64, 5, torch.device("cpu"))
    m = plain(model)
    assert plain.passes == 7
    assert m["val_masked_positions"] == int(windows.n_events.sum() + windows.has_eos.sum())
    assert m["val_loss"] == pytest.approx(m["val_loss_all"])
    trimmed = MaskedEvaluator(
        enc, windows, np.arange(len(windows)), 0.15, 64, 5, torch.device("cpu"), trim_fraction=0.3
    )
    t = trimmed(model)
    assert t["val_loss"] < t["val_loss_all"] == pytest.approx(m["val_loss_all"])
    assert t["val_acc"] == m["val_acc"] and 0 <= t["val_unigram_acc"] <= 1
