"""Early-bird tickets (prunekit.methods.after.early_bird): mask distance, the BN-scaling channel
mask, the detection rule on synthetic mask sequences, and the train callback."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from helpers import tiny_cnn
from prunekit.methods.after.early_bird import EarlyBird, bn_channel_mask, early_bird_epoch, mask_distance
from prunekit.train import StepInfo, train


def _m(*bits):
    return torch.tensor([bool(b) for b in bits])


# ----------------------------------------------------------------------------- mask_distance

def test_identical_masks_are_at_distance_0_and_complementary_ones_at_1():
    g = torch.Generator().manual_seed(0)
    a = {"x": torch.rand(4, 5, generator=g) > 0.5, "y": torch.rand(7, generator=g) > 0.3}
    assert mask_distance(a, {k: v.clone() for k, v in a.items()}) == 0.0
    assert mask_distance(a, {k: ~v for k, v in a.items()}) == 1.0


def test_the_distance_is_the_hamming_distance_over_all_entries():
    a = {"x": _m(1, 1, 0, 0), "y": _m(1, 0, 1, 1, 1, 0)}
    b = {"x": _m(1, 0, 0, 1), "y": _m(1, 0, 1, 0, 1, 0)}
    assert mask_distance(a, b) == 3 / 10  # 2 differ in x, 1 in y, out of 4 + 6
    assert mask_distance(a["x"], b["x"]) == 0.5  # plain tensors
    assert mask_distance({"x": a["x"].float()}, {"x": b["x"].int()}) == 0.5  # 0/1 tensors


@pytest.mark.parametrize("a, b, exc, word", [
    ({"x": _m(1, 0)}, {"y": _m(1, 0)}, ValueError, "same tensors"),
    ({"x": _m(1, 0)}, {"x": _m(1, 0, 1)}, ValueError, "shape"),
    ({"x": torch.tensor([0.5, 1.0])}, {"x": _m(1, 0)}, ValueError, "masks_a"),
    ([1, 0], {"x": _m(1, 0)}, TypeError, "masks_a"),
    ({"x": _m(1, 0)}, {"x": [1, 0]}, TypeError, "masks_b"),
    ({}, {}, ValueError, "no entries"),
])
def test_mask_distance_refuses_bad_input(a, b, exc, word):
    with pytest.raises(exc, match=word):
        mask_distance(a, b)


# ----------------------------------------------------------------------------- the BN mask

def test_bn_channel_mask_prunes_the_smallest_scales_globally():
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -0.1, 2.0]))
        model[3].weight.copy_(torch.tensor([-0.3, 0.05, 1.0, 0.2]))
    masks = bn_channel_mask(model, 3 / 7)  # round(3/7 * 7) = 3 channels: |gamma| 0.05, 0.1, 0.2
    assert masks["1.weight"].tolist() == [True, False, True]
    assert masks["3.weight"].tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="BatchNorm"):
        bn_channel_mask(nn.Linear(2, 2), 0.5)
    with pytest.raises(ValueError, match="ratio"):
        bn_channel_mask(model, 1.0)


# ----------------------------------------------------------------------------- detection

def _sequence(distances_to_final, n=8, size=20):
    """Masks that differ from a final mask in the given number of entries, epoch by epoch."""
    final = torch.zeros(size, dtype=torch.bool)
    final[: size // 2] = True
    seq = []
    for d in distances_to_final:
        m = final.clone()
        m[size // 2: size // 2 + d] = True  # d extra channels kept, each a different entry
        seq.append({"bn.weight": m})
    return seq


def test_the_detector_fires_at_the_first_epoch_whose_window_is_within_epsilon():
    # distances to the final mask (in entries of 20): 10, 8, 6, 4, 2, 1, 1, 0, 0, 0, ...
    seq = _sequence([10, 8, 6, 4, 2, 1, 1, 0, 0, 0, 0, 0])
    # newest vs each of the previous 4; with the nested construction the distance between
    # epochs i and j is |d_i - d_j| / 20, so the spread at i is (max(d over the window) - d_i) / 20
    spreads = [None] * 4 + [(max(d) - d[-1]) / 20 for d in
                            ([10, 8, 6, 4, 2], [8, 6, 4, 2, 1], [6, 4, 2, 1, 1], [4, 2, 1, 1, 0],
                             [2, 1, 1, 0, 0], [1, 1, 0, 0, 0])]
    assert spreads[4:] == [0.4, 0.35, 0.25, 0.2, 0.1, 0.05]
    assert early_bird_epoch(seq) == 9  # 0.1 is not below epsilon = 0.1; 0.05 is
    assert early_bird_epoch(seq, epsilon=0.11) == 8
    assert early_bird_epoch(seq, window=2, epsilon=0.06) == 5  # |2 - 1| / 20 = 0.05 at position 5
    assert early_bird_epoch(seq[:9]) is None


def test_a_mask_that_keeps_flipping_never_draws_a_ticket():
    seq = [{"w": _m(*([i % 2] * 10))} for i in range(20)]
    assert early_bird_epoch(seq, window=5, epsilon=0.5) is None


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(window=1), ValueError, "window"),
    (dict(window=2.5), TypeError, "window"),
    (dict(epsilon=0.0), ValueError, "epsilon"),
    (dict(epsilon=1.5), ValueError, "epsilon"),
])
def test_early_bird_epoch_refuses_bad_settings(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        early_bird_epoch(_sequence([1, 0, 0]), **kwargs)
    with pytest.raises(TypeError, match="masks"):
        early_bird_epoch({"w": _m(1, 0)})


# ----------------------------------------------------------------------------- the callback

def test_update_fires_once_at_the_same_position_as_the_function():
    seq = _sequence([10, 8, 6, 4, 2, 1, 1, 0, 0, 0, 0, 0])
    it = iter(seq)
    eb = EarlyBird(None, mask_fn=lambda model: next(it))
    fired = [eb.update(nn.Identity()) for _ in seq]
    assert fired.count(True) == 1 and fired.index(True) == 9
    assert eb.epoch == 10 and eb.drawn  # the ticket is drawn after the 10th epoch
    assert torch.equal(eb.ticket["bn.weight"], seq[9]["bn.weight"])
    assert all(math.isnan(d) for d in eb.distances[:4])
    assert eb.distances[4:10] == pytest.approx([0.4, 0.35, 0.25, 0.2, 0.1, 0.05])
    assert len(eb.distances) == len(seq)


def test_as_a_train_callback_it_records_one_mask_per_epoch():
    torch.manual_seed(0)
    model = tiny_cnn()
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(3)]
    eb = EarlyBird(0.5, window=2, epsilon=1.0, steps_per_epoch=len(data))
    train(model, data, epochs=4, progress=False, callback=eb)
    assert len(eb.distances) == 4  # one update per epoch, not per step
    assert math.isnan(eb.distances[0]) and eb.epoch == 2  # window 2: the first comparison draws it
    assert eb.ticket["1.weight"].sum() == 4  # half of the 8 channels of the only BatchNorm


def test_early_bird_refuses_bad_settings():
    with pytest.raises(ValueError, match="ratio"):
        EarlyBird(1.2)
    with pytest.raises(ValueError, match="ratio"):
        EarlyBird(None)
    with pytest.raises(ValueError, match="ratio"):
        EarlyBird(0.5, mask_fn=lambda m: {})
    with pytest.raises(TypeError, match="mask_fn"):
        EarlyBird(None, mask_fn="magnitude")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        EarlyBird(0.5, steps_per_epoch=0)
    with pytest.raises(ValueError, match="window"):
        EarlyBird(0.5, window=1)
    eb = EarlyBird(0.5)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        eb(StepInfo(0, 1, 0.0, tiny_cnn(), None))
