"""The masked-event Transformer: contract, config errors, padding invariance, attention paths.

Also holds :func:`grammar_sequences`, the synthetic fixture generator the other
model-side tests import (``from test_model import grammar_sequences``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from anomaly_ssl.config import ModelConfig
from anomaly_ssl.data.encoded import CLS_ID, EOS_ID, N_SPECIAL, PAD_ID, EncodedSequences
from anomaly_ssl.errors import ConfigError, ModelError
from anomaly_ssl.model import IGNORE_INDEX, EventTransformer

#: cyclic event patterns of the synthetic grammar (ids >= N_SPECIAL)
PATTERNS = [[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]]
EVENT_VOCAB = 18  # 5 specials + events 5..16 + one rare event (17) never used in normal data
RARE_EVENT = 17


def grammar_sequences(
    n: int = 300, seed: int = 0, min_len: int = 6, max_len: int = 30, attrs: bool = True
) -> EncodedSequences:
    """Sequences that cycle through one of :data:`PATTERNS` from a random phase.

    With ``attrs``: a ``device`` field constant per pattern (ids 5..7) and a
    ``gap`` field that follows the event (ids 5..7), so attributes alone would
    give the event away unless masking hides them.
    """
    rng = np.random.default_rng(seed)
    events, device, gap, lengths = [], [], [], []
    for _ in range(n):
        p = int(rng.integers(len(PATTERNS)))
        pat = PATTERNS[p]
        length = int(rng.integers(min_len, max_len + 1))
        phase = int(rng.integers(len(pat)))
        ev = [pat[(phase + i) % len(pat)] for i in range(length)]
        events += ev
        device += [N_SPECIAL + p] * length
        gap += [N_SPECIAL + e % 3 for e in ev]
        lengths.append(length)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    fields = {"event": np.asarray(events, dtype=np.int32)}
    if attrs:
        fields["device"] = np.asarray(device, dtype=np.int32)
        fields["gap"] = np.asarray(gap, dtype=np.int32)
    return EncodedSequences(np.array([f"s{i}" for i in range(n)], dtype=object), offsets, fields)


FIELD_SIZES = {"event": EVENT_VOCAB, "device": 8, "gap": 8}


class GrammarVocab:
    """The minimal vocabulary interface :func:`pretrain_encoded` needs, for the grammar data."""

    def __init__(self, encoded: EncodedSequences) -> None:
        self.counts = np.bincount(encoded.fields["event"], minlength=EVENT_VOCAB).astype(np.int64)
        self.names = encoded.field_names

    def sizes(self) -> dict[str, int]:
        return {k: FIELD_SIZES[k] for k in self.names}

    def event_token_counts(self) -> np.ndarray:
        return self.counts

    def save(self, path) -> None:
        from anomaly_ssl.io import write_json

        write_json(path, {"sizes": self.sizes()})


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest (and steadiest on a busy CI machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_cfg(**kw) -> ModelConfig:
    base = {"size": "tiny", "dropout": 0.0}
    return ModelConfig(**(base | kw))


def random_batch(B: int = 4, L: int = 12, seed: int = 0, pad_from: list[int] | None = None):
    g = torch.Generator().manual_seed(seed)
    inputs = {name: torch.randint(N_SPECIAL, size, (B, L), generator=g) for name, size in FIELD_SIZES.items()}
    for t in inputs.values():
        t[:, 0] = CLS_ID
    mask = torch.ones(B, L, dtype=torch.bool)
    for b, start in enumerate(pad_from or []):
        mask[b, start:] = False
        for t in inputs.values():
            t[b, start - 1] = EOS_ID
            t[b, start:] = PAD_ID
    return inputs, mask


# ----------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"d_model": 30, "n_heads": 4}, "divisible by model.n_heads"),
        ({"n_layers": 0}, "n_layers must be >= 1"),
        ({"n_heads": 0}, "n_heads must be >= 1"),
        ({"d_ff": 0}, "d_ff must be >= 1"),
        ({"dropout": 1.0}, "dropout must be in"),
    ],
)
def test_invalid_config_raises_config_error(kw, match):
    with pytest.raises(ConfigError, match=match):
        EventTransformer(tiny_cfg(**kw), FIELD_SIZES, 16)


@pytest.mark.parametrize(
    ("sizes", "kw", "match"),
    [
        ({"device": 8}, {}, "must include 'event'"),
        ({"event": 5}, {}, "leaves no real event"),
        ({"event": 9, "device": 3}, {}, "'device' has vocabulary size 3"),
        (FIELD_SIZES, {"predict_fields": ["price"]}, "not input fields"),
    ],
)
def test_invalid_fields_raise_model_error(sizes, kw, match):
    with pytest.raises(ModelError, match=match):
        EventTransformer(tiny_cfg(**kw), sizes, 16)


def test_too_long_window_and_missing_field_are_errors():
    model = EventTransformer(tiny_cfg(), FIELD_SIZES, 8)
    inputs, mask = random_batch(L=9)
    with pytest.raises(ModelError, match="longer than the model's max_len 8"):
        model(inputs, mask)
    inputs, mask = random_batch(L=8)
    del inputs["gap"]
    with pytest.raises(ModelError, match=r"lack field\(s\) \['gap'\]"):
        model(inputs, mask)


# ----------------------------------------------------------------------------- contract


def test_forward_shapes_and_loss_matches_manual_cross_entropy():
    model = EventTransformer(tiny_cfg(), FIELD_SIZES, 16).eval()
    inputs, mask = random_batch(B=3, L=10, pad_from=[6])
    labels = torch.full((3, 10), IGNORE_INDEX)
    labels[0, 2], labels[1, 5], labels[2, 7], labels[2, 3] = 7, 9, 11, 5
    logits, loss = model(inputs, mask, {"event": labels})
    assert logits.shape == (3, 10, EVENT_VOCAB)
    manual = F.cross_entropy(logits.reshape(-1, EVENT_VOCAB), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, manual, atol=1e-6, rtol=1e-5)
    # per-sequence losses: the mean over each sequence's labelled positions
    _, per_seq = model(inputs, mask, {"event": labels}, reduction="sequence", return_logits=False)
    ce = F.cross_entropy(logits.permute(0, 2, 1), labels, ignore_index=IGNORE_INDEX, reduction="none")
    expected = torch.stack([ce[0, 2], ce[1, 5], (ce[2, 7] + ce[2, 3]) / 2])
    torch.testing.assert_close(per_seq, expected, atol=1e-6, rtol=1e-5)
    assert model(inputs, mask)[1] is None


def test_predicted_fields_add_their_loss():
    model = EventTransformer(tiny_cfg(predict_fields=["device"]), FIELD_SIZES, 16).eval()
    inputs, mask = random_batch(B=2, L=6)
    ev = torch.full((2, 6), IGNORE_INDEX)
    ev[:, 2] = 6
    dev = torch.full((2, 6), IGNORE_INDEX)
    dev[:, 2] = 5
    _, only_event = model(inputs, mask, {"event": ev})
    _, both = model(inputs, mask, {"event": ev, "device": dev})
    h = model.encode(inputs, mask)
    dev_loss = F.cross_entropy(model.field_logits(h[:, 2], "device"), dev[:, 2])
    torch.testing.assert_close(both, only_event + dev_loss, atol=1e-6, rtol=1e-5)


def test_head_is_tied_to_event_embedding():
    model = EventTransformer(tiny_cfg(), FIELD_SIZES, 16).eval()
    # no output matrix of its own: the only (V_event, d) parameter is the input embedding
    shaped_like_head = [n for n, p in model.named_parameters() if p.shape == (EVENT_VOCAB, model.d_model)]
    assert shaped_like_head == ["embeddings.event.weight"]
    inputs, mask = random_batch(B=2, L=6)
    with torch.no_grad():
        logits = model(inputs, mask)[0]
        t = model.head_transform(model.encode(inputs, mask))
        manual = t @ model.embeddings["event"].weight.T + model.head_bias["event"]
        torch.testing.assert_close(logits, manual, atol=1e-5, rtol=1e-5)
        model.embeddings["event"].weight[9] += 1.0
        assert not torch.allclose(model(inputs, mask)[0][..., 9], logits[..., 9])
    assert model.n_params() == sum(p.numel() for p in model.parameters()) > 0


def test_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = EventTransformer(tiny_cfg(), FIELD_SIZES, 16, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    b = EventTransformer(tiny_cfg(), FIELD_SIZES, 16, seed=1)
    c = EventTransformer(tiny_cfg(), FIELD_SIZES, 16, seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["blocks.0.fc.weight"], sc["blocks.0.fc.weight"])


# ----------------------------------------------------------------------------- padding and attention


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("fused", [True, False])
def test_padding_invariance(pooling, fused):
    cfg = tiny_cfg(pooling=pooling, fused_attention=fused, n_layers=2, n_heads=2)
    model = EventTransformer(cfg, FIELD_SIZES, 32).eval()
    inputs, mask = random_batch(B=3, L=9, seed=3, pad_from=[5, 7])
    # the same sequences with 11 extra pad positions
    wide = {k: F.pad(v, (0, 11), value=PAD_ID) for k, v in inputs.items()}
    wide_mask = F.pad(mask, (0, 11), value=False)
    with torch.no_grad():
        e1, e2 = model.embed(inputs, mask), model.embed(wide, wide_mask)
        l1, l2 = model(inputs, mask)[0], model(wide, wide_mask)[0]
    torch.testing.assert_close(e1, e2, atol=1e-5, rtol=0)
    torch.testing.assert_close(l1[mask], l2[:, :9][mask], atol=1e-5, rtol=0)
    # and alone in a batch of one (no padding at all)
    with torch.no_grad():
        single = model.embed({k: v[:1, :5] for k, v in inputs.items()}, mask[:1, :5])
    torch.testing.assert_close(single, e1[:1], atol=1e-5, rtol=0)


def test_fused_and_reference_attention_agree():
    cfg = tiny_cfg(n_layers=2, n_heads=2)
    fused = EventTransformer(cfg, FIELD_SIZES, 16, seed=4).eval()
    ref = EventTransformer(replace(cfg, fused_attention=False), FIELD_SIZES, 16, seed=4).eval()
    inputs, mask = random_batch(B=4, L=12, seed=5, pad_from=[4, 12, 8])
    with torch.no_grad():
        a, b = fused.encode(inputs, mask), ref.encode(inputs, mask)
    torch.testing.assert_close(a[mask], b[mask], atol=1e-5, rtol=1e-5)


def test_grammar_fixture_is_well_formed():
    enc = grammar_sequences(n=20, seed=1)
    assert len(enc) == 20 and enc.field_names == ["event", "device", "gap"]
    assert enc.fields["event"].min() >= N_SPECIAL and enc.fields["event"].max() < RARE_EVENT
