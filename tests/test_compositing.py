"""Back-to-front "over" compositing (dplab.ops.compositing), checked against a hand computation."""

from __future__ import annotations

import torch

from dplab.ops.compositing import over


def test_two_layers_by_hand():
    # Far layer: colour 0.8 at opacity 0.5; near layer: colour 0.2 at opacity 0.25 (premultiplied
    # 0.4 and 0.05). Over nothing: 0.4, then 0.4 * 0.75 + 0.05 = 0.35; the coverage 0.5, then
    # 0.5 * 0.75 + 0.25 = 0.625 = 1 - (1 - 0.5)(1 - 0.25); normalised 0.35 / 0.625 = 0.56.
    out, cover = torch.zeros(()), torch.zeros(())
    for colour, alpha in ((0.8, 0.5), (0.2, 0.25)):
        a = torch.tensor(alpha)
        out = over(out, a * colour, a)
        cover = over(cover, a, a)
    assert torch.allclose(out, torch.tensor(0.35))
    assert torch.allclose(cover, torch.tensor(0.625))
    assert torch.allclose(out / cover, torch.tensor(0.56))


def test_opaque_front_hides_back_and_transparent_front_shows_it():
    back = torch.rand(1, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    front = torch.rand(1, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(over(back, front, torch.ones(1, 1, 4, 5)), front)
    assert torch.equal(over(back, torch.zeros_like(front), torch.zeros(1, 1, 4, 5)), back)


def test_inplace_writes_a_window_and_matches_the_copy():
    g = torch.Generator().manual_seed(2)
    image = torch.rand(2, 3, 8, 9, generator=g)
    front = torch.rand(2, 3, 4, 5, generator=g) * 0.5
    alpha = torch.rand(2, 1, 4, 5, generator=g)   # broadcast over the channels
    expected = over(image[..., 2:6, 3:8], front, alpha)
    rest = image.clone()
    window = image[..., 2:6, 3:8]
    assert over(window, front, alpha, inplace=True) is window
    assert torch.equal(image[..., 2:6, 3:8], expected)
    image[..., 2:6, 3:8] = rest[..., 2:6, 3:8]
    assert torch.equal(image, rest)  # nothing outside the window changed
