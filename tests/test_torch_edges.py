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
