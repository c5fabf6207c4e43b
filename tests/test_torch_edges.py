import pytest
import torch

from ralu_torch.edges import edge_map, token_scores
from ralu_torch.selection import select_top
from ralu_torch.tokens import TokenSet


def test_edges_rank_first_and_magnitude_breaks_ties():
    img = torch.full((1, 3, 32, 32), -0.2)
    img[:, :, 4:12, 20:28] = 0.9          # a bright square: strong edges in token (0, 1) with 16 px tokens
    img[:, :, 16:32, 0:16] += torch.linspace(0, 0.05, 16)  # a faint ramp: no Canny edges, some gradient
    scores = token_scores(edge_map(img), 16)
    assert scores.shape == (1, 2, 2)
    assert scores[0, 0, 1] == scores.max()
    assert scores[0, 1, 0] > scores[0, 0, 0]      # no edges anywhere there: the gradient decides
    ts = TokenSet.regular(1, (4, 4), 2)
    sel = select_top(ts, scores, 0.5)
    assert sel[0].tolist() == [False, True, True, False]


def test_flat_images_fall_back_to_stable_order():
    scores = token_scores(edge_map(torch.zeros(2, 3, 32, 32)), 16)
    ts = TokenSet.regular(2, (4, 4), 2)
    sel = select_top(ts, scores, 0.25)
    assert sel.sum(dim=1).tolist() == [1, 1] and sel[:, 0].all()


def test_fraction_one_selects_every_coarse_token():
    ts = TokenSet.regular(1, (4, 4), 2)
    assert select_top(ts, torch.zeros(1, 2, 2), 1.0).all()


def test_bounded_hysteresis_gives_kornias_edges_on_test_images():
    import kornia

    from ralu_torch.analysis.selection import natural_images, synthetic_images
    from ralu_torch.edges import HYSTERESIS_ROUNDS

    for name, img in {**natural_images(), **synthetic_images()}.items():
        gray = kornia.color.rgb_to_grayscale(((img + 1) / 2).clamp(0, 1))
        magnitude, reference = kornia.filters.canny(gray)           # hysteresis until nothing changes
        ours = edge_map(img)
        assert torch.equal(ours[1], reference) and torch.equal(ours[0], magnitude), name
        assert torch.equal(edge_map(img, rounds=None)[1], reference), name
    assert HYSTERESIS_ROUNDS == 64


def test_bounded_hysteresis_is_bounded_and_sync_free():
    from ralu_torch.edges import hysteresis

    line = torch.zeros(1, 1, 40)
    line[0, 0, :] = 1                                   # a 40-pixel weak line with one strong end
    strong = torch.zeros_like(line, dtype=torch.bool)
    strong[0, 0, 0] = True
    assert hysteresis(strong, line > 0, rounds=10).sum() == 11        # reaches 10 pixels further
    assert hysteresis(strong, line > 0).sum() == 40                    # exact: the whole line
    # On the meta device every data-dependent read raises: the bounded map runs there, the
    # exact loop (kornia's rule) cannot. (kornia's own sigma check reads a tensor it builds on
    # the host from Python numbers, which is no device sync; the meta device tells them apart.)
    meta = torch.empty(2, 3, 64, 64, device="meta")
    magnitude, edges = edge_map(meta)
    assert edges.shape == (2, 1, 64, 64) and edges.device.type == "meta"
    with pytest.raises(NotImplementedError):
        edge_map(meta, rounds=None)
