"""Embeddings and per-event surprise: shapes, window aggregation, a reference check, planted events."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_model import FIELD_SIZES, PATTERNS, GrammarVocab, _one_thread, grammar_sequences  # noqa: F401

from anomaly_ssl.config import Config, ModelConfig, WindowConfig
from anomaly_ssl.data.encoded import MASK_ID, N_SPECIAL, EncodedSequences
from anomaly_ssl.embed import aggregate_surprise, embed_sequences, event_surprise
from anomaly_ssl.errors import ConfigError
from anomaly_ssl.masking import add_end_slots
from anomaly_ssl.model import EventTransformer
from anomaly_ssl.pretrain import pretrain_encoded
from anomaly_ssl.windows import assemble, make_windows


def one_sequence(events: list[int], pattern: int = 0) -> EncodedSequences:
    ev = np.asarray(events, dtype=np.int32)
    fields = {
        "event": ev,
        "device": np.full(len(ev), N_SPECIAL + pattern, dtype=np.int32),
        "gap": (N_SPECIAL + ev % 3).astype(np.int32),
    }
    return EncodedSequences(np.array(["x"], dtype=object), np.array([0, len(ev)]), fields)


@pytest.fixture(scope="module")
def trained() -> EventTransformer:
    """A tiny model trained on the cyclic grammar (a few seconds), with end slots after EOS."""
    cfg = Config()
    cfg.model = ModelConfig(size="tiny", dropout=0.0, eos_slots=3)
    cfg.window = WindowConfig(max_len=24)
    cfg.train.batch_size = 32
    cfg.train.max_epochs = 30
    cfg.train.lr = 1e-2
    cfg.train.patience = 0
    cfg.train.trim_fraction = 0.0
    cfg.device = "cpu"
    enc = grammar_sequences(n=240, seed=1, max_len=40)
    result = pretrain_encoded(enc, GrammarVocab(enc), cfg)
    v = result.card["validation"]
    assert v["val_masked_accuracy"] > v["val_unigram_accuracy"] + 0.3
    return result.model


def test_embeddings_aggregate_windows_by_length(trained):
    enc = grammar_sequences(n=12, seed=5, min_len=3, max_len=60)
    wcfg = WindowConfig(max_len=16, stride=5)
    emb = embed_sequences(trained, enc, wcfg, batch_size=7)
    assert emb.shape == (12, trained.d_model) and emb.dtype == np.float32
    # reference: every window on its own, then the length-weighted mean per sequence
    w = make_windows(enc.lengths, wcfg, add_eos=True)
    with torch.no_grad():
        inputs, mask = assemble(enc, w, np.arange(len(w)))
        per_window = trained.eval().embed(inputs, mask).numpy()
    for s in range(12):
        k = w.sequence_index == s
        expected = (per_window[k] * w.lengths[k, None]).sum(0) / w.lengths[k].sum()
        np.testing.assert_allclose(emb[s], expected, atol=1e-5)
    assert (w.sequence_index == 0).sum() >= 1 and len(w) > 12  # some sequences were split


def test_surprise_matches_a_per_pass_reference(trained):
    enc = grammar_sequences(n=5, seed=7, max_len=20)
    wcfg = WindowConfig(max_len=24)
    res = event_surprise(trained, enc, wcfg, passes=3, batch_size=4)
    assert res.per_event.shape == (int(enc.offsets[-1]),) and res.per_event.dtype == np.float32
    assert np.isfinite(res.per_event).all() and np.isfinite(res.eos_nll).all()
    # reference: mask positions p % 3 == j of each window (all fields), read the true event's NLL;
    # as in training, masked end slots follow each EOS and are never scored themselves
    w = make_windows(enc.lengths, wcfg)
    inputs, mask = assemble(enc, w, np.arange(len(w)))
    inputs, mask, slots = add_end_slots(inputs, mask, torch.full((len(w),), trained.cfg.eos_slots))
    assert trained.cfg.eos_slots > 0 and slots.any()
    with torch.no_grad():
        for j in range(3):
            pos = torch.zeros_like(mask)
            pos[:, j::3] = True
            pos &= mask & ~slots
            pos[:, 0] = False
            hidden = {k: v.masked_fill(pos, MASK_ID) for k, v in inputs.items()}
            logp = torch.log_softmax(trained.field_logits(trained.encode(hidden, mask)), -1)
            for s in range(5):
                n = int(enc.lengths[s])
                for col in range(1, n + 2):
                    if col % 3 != j:
                        continue
                    target = inputs["event"][s, col]
                    ref = -logp[s, col, target].item()
                    got = res.eos_nll[s] if col == n + 1 else res.per_event[enc.offsets[s] + col - 1]
                    assert got == pytest.approx(ref, abs=1e-4)


def test_planted_event_is_the_most_surprising(trained):
    normal = [PATTERNS[0][i % 4] for i in range(36)]
    planted = list(normal)
    planted[21] = PATTERNS[2][1]  # an event of another pattern, out of place
    enc = EncodedSequences.concat([one_sequence(normal), one_sequence(planted)])
    # windows of 16 tokens: the sequences are split, the planted event lies in several windows
    res = event_surprise(trained, enc, WindowConfig(max_len=16, stride=5), passes=3)
    per = res.per_event[36:]
    assert int(np.nanargmax(per)) == 21
    assert per[21] > 3 * np.median(per)
    scores = res.aggregate("topk", 3)
    assert scores[1] > scores[0]
    assert res.expected[36 + 21] == normal[21]  # the model expected the pattern's event


def test_truncate_mode_leaves_uncovered_events_nan(trained):
    enc = grammar_sequences(n=3, seed=9, min_len=30, max_len=30)
    res = event_surprise(trained, enc, WindowConfig(max_len=16, mode="truncate"), passes=2)
    per = res.per_event.reshape(3, 30)
    assert np.isfinite(per[:, :15]).all() and np.isnan(per[:, 15:]).all()
    assert np.isnan(res.eos_nll).all() and (res.expected.reshape(3, 30)[:, 15:] == -1).all()


def test_window_longer_than_the_model_is_an_error(trained):
    enc = grammar_sequences(n=2)
    with pytest.raises(ConfigError, match=r"exceeds the model.s max_len .*use window.max_len <= 24"):
        embed_sequences(trained, enc, WindowConfig(max_len=64))


def test_aggregate_surprise_mean_max_topk():
    per = np.array([1.0, 5.0, np.nan, 2.0, 0.5, 3.0], dtype=np.float32)
    offsets = np.array([0, 3, 3, 6])  # second sequence is empty
    eos = np.array([4.0, np.nan, 1.0])
    np.testing.assert_allclose(aggregate_surprise(per, offsets, eos, "mean"), [10 / 3, 0.0, 6.5 / 4])
    np.testing.assert_allclose(aggregate_surprise(per, offsets, eos, "max"), [5.0, 0.0, 3.0])
    np.testing.assert_allclose(aggregate_surprise(per, offsets, eos, "topk", 2), [4.5, 0.0, 2.5])
    np.testing.assert_allclose(aggregate_surprise(per, offsets, None, "topk", 2), [3.0, 0.0, 2.5])
    with pytest.raises(ConfigError, match="mean, max or topk"):
        aggregate_surprise(per, offsets, eos, "median")


def test_untrained_field_mismatch_is_an_error():
    model = EventTransformer(ModelConfig(size="tiny"), FIELD_SIZES, 16)
    enc = grammar_sequences(n=2, attrs=False)
    with pytest.raises(ConfigError, match="lacks field"):
        event_surprise(model, enc, WindowConfig(max_len=13))

