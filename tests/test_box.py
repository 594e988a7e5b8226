"""dplab.ops.box.box_mean against hand counts, and its refusals."""

import pytest
import torch

from dplab.ops.box import box_mean


def test_box_mean_counts_the_border_as_each_rule_says():
    x = torch.arange(25, dtype=torch.float64).reshape(1, 1, 5, 5)
    # interior: the plain mean of the 3x3 neighbourhood of (2, 2) is the centre value, 12
    assert box_mean(x, 3)[0, 0, 2, 2].item() == pytest.approx(12.0)
    # corner (0, 0), zeros counted: (0 + 1 + 5 + 6) / 9
    assert box_mean(x, 3)[0, 0, 0, 0].item() == pytest.approx(12 / 9)
    # corner, replicated edges: rows (0,0,1), (0,0,1), (5,5,6) -> 18 / 9
    assert box_mean(x, 3, padding="replicate")[0, 0, 0, 0].item() == pytest.approx(18 / 9)
    assert torch.equal(box_mean(x, 1), x)


def test_box_mean_refuses_impossible_input():
    x = torch.zeros(1, 1, 4, 4)
    for bad in (0, 2, -3, 1.0, True):
        with pytest.raises(ValueError, match="window"):
            box_mean(x, bad)
    with pytest.raises(ValueError, match="padding"):
        box_mean(x, 3, padding="reflect")
    with pytest.raises(ValueError, match="x must be"):
        box_mean(torch.zeros(4, 4), 3)
