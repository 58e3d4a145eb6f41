"""Masking: rates within tolerance, specials never chosen, labels, hidden attributes, determinism."""

from __future__ import annotations

import pytest
import torch

from anomaly_ssl.config import MaskingConfig
from anomaly_ssl.data.encoded import CLS_ID, EOS_ID, MASK_ID, N_SPECIAL, PAD_ID
from anomaly_ssl.errors import ConfigError
from anomaly_ssl.masking import (
    MaskingCollator,
    apply_masking,
    choose_positions,
    derive_generator,
    maskable,
    pass_positions,
)
from anomaly_ssl.model import IGNORE_INDEX

V_EVENT = 40


def padded_batch(B: int = 2000, L: int = 40, seed: int = 0):
    """Random event/attribute batch: CLS first, EOS last, random padding lengths."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, L + 1, (B,), generator=g)
    pos = torch.arange(L).unsqueeze(0)
    mask = pos < lengths.unsqueeze(1)
    ev = torch.randint(N_SPECIAL, V_EVENT, (B, L), generator=g)
    attr = torch.randint(N_SPECIAL, 20, (B, L), generator=g)
    for t in (ev, attr):
        t[:, 0] = CLS_ID
        t[torch.arange(B), lengths - 1] = EOS_ID
        t[~mask] = PAD_ID
    return {"event": ev, "item": attr}, mask


def test_rates_match_config_and_specials_are_never_masked():
    cfg = MaskingConfig(mask_prob=0.2, mask_replace_prob=0.7, random_replace_prob=0.2, min_masked=0)
    inputs, mask = padded_batch()
    gen = torch.Generator().manual_seed(1)
    chosen = choose_positions(inputs["event"], mask, cfg.mask_prob, cfg.min_masked, gen)
    ok = maskable(inputs["event"], mask)
    assert not chosen[~ok].any(), "PAD or CLS chosen"
    assert not chosen[:, 0].any() and not chosen[~mask].any()
    rate = chosen.sum().item() / ok.sum().item()
    assert abs(rate - 0.2) < 0.01
    # EOS is maskable
    assert chosen[inputs["event"] == EOS_ID].float().mean().item() == pytest.approx(0.2, abs=0.03)

    masked, _ = apply_masking(inputs, chosen, cfg, V_EVENT, gen, predict_fields=["item"])
    ev, new = inputs["event"][chosen], masked["event"][chosen]
    n = chosen.sum().item()
    to_mask = (new == MASK_ID).sum().item() / n
    kept = (new == ev).sum().item() / n
    random = ((new != MASK_ID) & (new != ev)).sum().item() / n
    assert abs(to_mask - 0.7) < 0.015
    # a random draw equals the original 1/35 of the time: keep ~ 0.1 + 0.2/35, random ~ 0.2 * 34/35
    assert abs(kept - (0.1 + 0.2 / 35)) < 0.015
    assert abs(random - 0.2 * 34 / 35) < 0.015
    replaced = new[(new != MASK_ID) & (new != ev)]
    assert replaced.min().item() >= N_SPECIAL and replaced.max().item() < V_EVENT
    # unchosen positions untouched in every field
    for name in inputs:
        assert torch.equal(masked[name][~chosen], inputs[name][~chosen])


def test_labels_and_hidden_attributes():
    cfg = MaskingConfig(mask_prob=0.3, mask_replace_prob=0.0, random_replace_prob=0.0)  # keep all events
    inputs, mask = padded_batch(B=200, seed=2)
    gen = torch.Generator().manual_seed(3)
    chosen = choose_positions(inputs["event"], mask, cfg.mask_prob, cfg.min_masked, gen)
    masked, labels = apply_masking(inputs, chosen, cfg, V_EVENT, gen, predict_fields=["item"])
    assert torch.equal(labels["event"][chosen], inputs["event"][chosen])
    assert (labels["event"][~chosen] == IGNORE_INDEX).all()
    # the event is kept, but its attributes are hidden: the model must not read it off them
    assert torch.equal(masked["event"], inputs["event"])
    assert (masked["item"][chosen] == MASK_ID).all()
    # attribute labels: original real values only (EOS positions are not attribute targets)
    real = chosen & (inputs["item"] >= N_SPECIAL)
    assert torch.equal(labels["item"][real], inputs["item"][real])
    assert (labels["item"][~real] == IGNORE_INDEX).all()
    assert set(labels) == {"event", "item"}


def test_min_masked_holds_even_with_tiny_probability():
    inputs, mask = padded_batch(B=500, L=12, seed=4)
    gen = torch.Generator().manual_seed(5)
    chosen = choose_positions(inputs["event"], mask, 1e-6, 2, gen)
    per_seq = chosen.sum(1)
    n_ok = maskable(inputs["event"], mask).sum(1)
    assert torch.equal(per_seq, torch.clamp(n_ok, max=2))
    assert (per_seq >= 1).all()


def test_collator_is_deterministic_per_key_and_fresh_across_keys():
    inputs, mask = padded_batch(B=64, seed=6)
    col = MaskingCollator(MaskingConfig(), V_EVENT, seed=7)
    a, b, c = col(inputs, mask, (0, 1)), col(inputs, mask, (0, 1)), col(inputs, mask, (0, 2))
    assert torch.equal(a.labels["event"], b.labels["event"])
    assert torch.equal(a.inputs["event"], b.inputs["event"])
    assert not torch.equal(a.labels["event"], c.labels["event"])
    assert a.n_tokens == int(mask.sum())
    other_seed = MaskingCollator(MaskingConfig(), V_EVENT, seed=8)(inputs, mask, (0, 1))
    assert not torch.equal(other_seed.labels["event"], a.labels["event"])
    g1, g2 = derive_generator(1, 2, 3), derive_generator(1, 2, 3)
    assert torch.equal(torch.rand(5, generator=g1), torch.rand(5, generator=g2))


def test_pass_positions_cover_every_maskable_position_once():
    inputs, mask = padded_batch(B=50, seed=8)
    total = torch.zeros_like(mask, dtype=torch.int64)
    for j in range(3):
        total += pass_positions(mask, inputs["event"], 3, j).long()
    ok = maskable(inputs["event"], mask)
    assert (total[ok] == 1).all() and (total[~ok] == 0).all()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"mask_prob": 1.5}, "mask_prob must be in"),
        ({"mask_prob": 0.0}, "mask_prob must be > 0"),
        ({"random_replace_prob": -0.1}, "random_replace_prob must be in"),
        ({"mask_replace_prob": 0.8, "random_replace_prob": 0.3}, "must be <= 1"),
        ({"min_masked": -1}, "min_masked must be >= 0"),
    ],
)
def test_invalid_probabilities(kw, match):
    with pytest.raises(ConfigError, match=match):
        MaskingCollator(MaskingConfig(**kw), V_EVENT)


def test_end_slots_follow_eos_and_hide_the_length():
    from anomaly_ssl.data.encoded import EOS_ID
    from anomaly_ssl.masking import add_end_slots

    # row 0: CLS a b EOS ; row 1: CLS a b c d EOS ; row 2: a cut window without EOS
    ev = torch.tensor([[3, 5, 6, 4, 0, 0], [3, 5, 6, 7, 8, 4], [3, 5, 6, 7, 0, 0]])
    attr = ev.clone()
    mask = ev != 0
    inputs, wide_mask, slots = add_end_slots({"event": ev, "attr": attr}, mask, torch.tensor([2, 1, 3]))
    assert inputs["event"].shape == (3, 8) and wide_mask.shape == (3, 8)
    # the slots sit right after each EOS, are attended and hold MASK in every field
    assert slots[0].nonzero().flatten().tolist() == [4, 5]
    assert slots[1].nonzero().flatten().tolist() == [6]
    assert not slots[2].any()  # no EOS, no slots
    for name in ("event", "attr"):
        assert (inputs[name][slots] == MASK_ID).all()
    assert (wide_mask == (mask_pad(mask, 8) | slots)).all()
    # everything before the slots is unchanged
    assert (inputs["event"][:, :6][mask] == ev[mask]).all()
    assert (inputs["event"] == EOS_ID).sum() == 2


def mask_pad(mask: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(mask, (0, width - mask.shape[1]), value=False)


def test_collator_end_slots_carry_no_labels_and_vary_in_number():
    from anomaly_ssl.config import MaskingConfig
    from anomaly_ssl.masking import MaskingCollator

    ev = torch.tensor([[3, 5, 6, 7, 4]] * 64)
    mask = torch.ones_like(ev, dtype=torch.bool)
    collator = MaskingCollator(MaskingConfig(), event_vocab_size=9, seed=0, end_slots=3)
    batch = collator({"event": ev}, mask, key=(0, 0))
    extra = batch.attention_mask.sum(1) - 5  # slots per row
    assert set(extra.tolist()) == {0, 1, 2, 3}
    assert (batch.labels["event"][:, 5:] == -100).all()
    assert batch.labels["event"].shape == batch.inputs["event"].shape
