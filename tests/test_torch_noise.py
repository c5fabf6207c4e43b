"""Re-injection noise: empirical covariance equals I - c U U^T (1 - c for kept tokens)."""

import numpy as np
import pytest
import torch

from ralu_schedule import nearest_upsampling_matrix
from ralu_torch.noise import draw, reinjection_noise
from ralu_torch.tokens import TokenSet, child_source, upsample_values


def operator_matrix(parent, slot, src, n_parents, F):
    """Dense U of the token upsampling for image 0 (rows: new values, cols: old values)."""
    L2 = parent.shape[1]
    U = np.zeros((L2 * F, n_parents * F))
    for i in range(L2):
        for j in range(F):
            p = int(parent[0, i])
            s = int(slot[0, i])
            U[i * F + j, p * F + (int(src[s, j]) if s >= 0 else j)] = 1.0
    return U


@pytest.mark.parametrize("mode", ["latent", "token"])
def test_empirical_covariance(mode):
    F, c, f = 8, 0.2, 2   # 2 channels x 2 x 2 features keep the covariance small
    ts = TokenSet.regular(1, (2, 4), 2)
    sel = torch.tensor([[True, False]])
    new, parent, slot = ts.upsample(sel, f)
    src = child_source(f, F, mode)
    n = 40000
    w = torch.randn(n, new.length, F, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = reinjection_noise(w, parent.expand(n, -1), slot.expand(n, -1), src, 2, c, f)
    emp = np.cov(z.reshape(n, -1).numpy(), rowvar=False)
    U = operator_matrix(parent, slot, src, 2, F)
    child_rows = np.repeat((slot[0] >= 0).numpy(), F)
    Uc = U * child_rows[:, None]      # upsampled part; kept tokens use U = I and get 1 - c
    expected = np.eye(U.shape[0]) - c * Uc @ Uc.T
    expected[~child_rows, ~child_rows] = 1 - c
    se = 4.5 / np.sqrt(n)             # ~4.5 standard errors of a unit-variance covariance entry
    assert np.abs(emp - expected).max() < se
    # and the blocks really are correlated (the check can fail)
    assert np.abs(expected - np.eye(U.shape[0])).max() >= c - 1e-12


def test_authors_variance_for_kept_tokens():
    ts = TokenSet.regular(1, (2, 4), 2)
    new, parent, slot = ts.upsample(torch.tensor([[True, False]]), 2)
    w = torch.randn(20000, new.length, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kw = dict(parent=parent.expand(20000, -1), slot=slot.expand(20000, -1), source=child_source(2, 8, "latent"),
              n_parents=2, c=0.2, factor=2)
    kept = (slot[0] < 0)
    exact = reinjection_noise(w, **kw)[:, kept].var().item()
    unit = reinjection_noise(w, kept_noise="unit", **kw)[:, kept].var().item()
    assert exact == pytest.approx(0.8, abs=0.02) and unit == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ValueError, match="kept_noise must be one of exact, unit"):
        reinjection_noise(w, kept_noise="one", **kw)


def test_latent_mode_matches_schedule_core_upsampling_matrix():
    # image-level U of latent mode == ralu_schedule's nearest upsampling matrix per channel
    ts = TokenSet.regular(1, (2, 2), 2)
    new, parent, slot = ts.upsample(ts.is_coarse(), 2)
    src = child_source(2, 4, "latent")           # one channel
    x = torch.arange(4.0).view(1, 1, 4)          # the coarse 2x2 latent of one token
    up = upsample_values(x, parent, slot, src)
    from ralu_torch.tokens import to_latent
    got = to_latent(up, new)[0, 0].reshape(-1).numpy()
    U = nearest_upsampling_matrix(2, 2, 2)
    assert np.array_equal(got, U @ np.arange(4.0))


def test_generator_list_length_is_checked():
    with pytest.raises(ValueError, match="got 2 generators for a batch of 3 images"):
        draw((3, 4), [torch.Generator(), torch.Generator()], "cpu")
