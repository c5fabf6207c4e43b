"""The analytic Gaussian backend: exact velocity, pooled spectra, and sampling the data."""

import numpy as np
import pytest
import torch

from ralu_schedule import Layout, preset, solve
from ralu_torch.backends.gaussian import GaussianBackend, GaussianField
from ralu_torch.analysis.quality import (flop_matched_steps, run, spectrum_metrics, uncorrelated_noise, unmatched_timesteps,
                                without_mixed_stage, without_reinjection)
from ralu_torch.tokens import TokenSet, pack


@pytest.mark.parametrize("sigma", [0.2, 0.5, 0.9])
def test_velocity_is_the_monte_carlo_conditional_mean(sigma):
    """Regress eps - x1 on x_t over many draws: the least-squares map is E[v | x_t]
    (linear for Gaussians); it must match the closed form within Monte-Carlo error."""
    f = GaussianField(height=4, width=4, channels=1, exponent=2.0, k0=0.25)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x1 = f.sample(n, g).reshape(n, 16)
    eps = torch.randn(n, 16, generator=g, dtype=torch.float64)
    xt = (1 - sigma) * x1 + sigma * eps
    v = eps - x1
    G_mc = torch.linalg.lstsq(xt, v).solution.T                # v ~ G x_t
    basis = torch.eye(16, dtype=torch.float64).reshape(16, 1, 4, 4)
    G = f.velocity(basis, sigma).reshape(16, 16).T             # column j = velocity of basis vector j
    assert (G - G_mc).abs().max() < 0.02
    resid_ours = ((v - xt @ G.T) ** 2).mean()
    resid_mc = ((v - xt @ G_mc.T) ** 2).mean()
    assert resid_ours <= resid_mc * 1.001                      # nothing linear does better


def test_pooled_spectrum_matches_pooling_samples():
    f = GaussianField(height=16, width=16, channels=2)
    x = f.sample(4000, torch.Generator().manual_seed(1))
    pooled = torch.nn.functional.avg_pool2d(x, 2)
    emp = (torch.fft.fft2(pooled).abs() ** 2 / 64).mean(dim=(0, 1))
    rel = (emp / f.spectrum(2) - 1).abs()
    assert rel.mean() < 3 * np.sqrt(2 / 8000)                 # per-mode std of the estimate


def test_many_step_baseline_samples_the_data_covariance():
    f = GaussianField(height=16, width=16)
    be = GaussianBackend(f)
    x, _ = run(be, solve(Layout(steps=(200,), ends=(1.0,))), 256)
    m = spectrum_metrics(x, f)
    floor = spectrum_metrics(f.sample(256, torch.Generator().manual_seed(5)), f)
    assert m["var"] == pytest.approx(1.0, abs=0.03)
    assert max(abs(b) for b in m["bands"]) < 0.03
    assert m["fd"] < 3 * floor["fd"]


def test_one_size_token_sets_use_the_exact_velocity_at_their_resolution():
    f = GaussianField(height=16, width=16)
    be = GaussianBackend(f)
    low = f.sample(2, torch.Generator().manual_seed(2), size=2).float()
    ts = TokenSet.regular(2, be.grid, 2)
    v = be.velocity(pack(low), be.prepare(ts), 0.4)
    assert torch.allclose(v, pack(f.velocity(low, 0.4, 2).float()), atol=1e-6)


def test_mixed_rule_pools_the_full_resolution_velocity():
    f = GaussianField(height=16, width=16, channels=1)
    be = GaussianBackend(f)
    ts = TokenSet.regular(1, be.grid, 2)
    sel = torch.zeros(1, 16, dtype=torch.bool)
    sel[0, 3] = True
    mixed, parent, slot = ts.upsample(sel, 2)
    from ralu_torch.tokens import child_source, to_latent, upsample_values
    x = upsample_values(pack(f.sample(1, torch.Generator().manual_seed(3), size=2).float()), parent, slot,
                        child_source(2, 4, "latent"))
    v = be.velocity(x, be.prepare(mixed), 0.5)
    full = f.velocity(to_latent(x, mixed), 0.5).float()
    coarse = pack(torch.nn.functional.avg_pool2d(full, 2))
    kept = (slot[0] < 0)
    idx = (mixed.cells[0, kept, 0] // 2) * 4 + mixed.cells[0, kept, 1] // 2
    assert torch.allclose(v[0, kept], coarse[0, idx], atol=1e-6)


def test_presets_run_on_the_analytic_backend():
    be = GaussianBackend(GaussianField(height=32, width=32))
    x, res = run(be, preset("flux-dev-7x"), 4)
    assert x.shape == (4, 3, 32, 32) and torch.isfinite(x).all()
    assert res.stage_tokens == list(preset("flux-dev-7x").layout.stage_tokens(16, 16))


def test_ablations_edit_what_they_say():
    s = preset("flux-dev-7x")
    naive = without_reinjection(s)
    assert [t.restart for t in naive.transitions] == [t.at for t in s.transitions]
    assert [(t.a, t.b) for t in naive.transitions] == [(1.0, 0.0)] * 2
    assert naive.stages[1].start == s.layout.ends[0]
    assert all(t.c == 0.0 for t in uncorrelated_noise(s).transitions)
    assert unmatched_timesteps(s).shifts == (3.0, 3.0, 3.0)
    off = without_mixed_stage(s)
    assert off.layout.steps == (5, 5) and off.layout.ends == (0.3, 1.0)
    assert flop_matched_steps("flux-dev-7x") == 7 and flop_matched_steps("flux-dev-4x") == 12


def test_bad_field():
    with pytest.raises(ValueError, match="height and width must be even"):
        GaussianField(height=15, width=16)


# -- the texture-patch mixture -------------------------------------------------------------------
from ralu_torch.backends.gaussian import TexturePatchField  # noqa: E402
from ralu_torch.analysis.quality import region_metrics, selection_hit_rate  # noqa: E402

SMALL = dict(height=8, width=8, channels=1, region=4, positions=((0, 0), (4, 4)), k0=0.125)


def test_texture_velocity_is_the_conditional_mean():
    """Orthogonality: eps - x1 - v(x_t) is uncorrelated with functions of x_t, and no linear
    predictor (fitted on the same draws) does better than v."""
    f = TexturePatchField(**SMALL)
    g = torch.Generator().manual_seed(0)
    n, sigma = 60_000, 0.6
    x1 = f.sample(n, g)
    eps = torch.randn(x1.shape, generator=g, dtype=torch.float64)
    xt = (1 - sigma) * x1 + sigma * eps
    v = f.velocity(xt, sigma)
    resid = (eps - x1 - v).reshape(n, -1)
    feats = torch.cat([xt.reshape(n, -1), (xt**2).reshape(n, -1) - (xt**2).mean()], dim=1)
    corr = (resid.T @ feats / n) / (resid.std(dim=0)[:, None] * feats.std(dim=0)[None, :])
    assert corr.abs().max() < 6 / np.sqrt(n)            # max over 64 x 128 pairs of N(0, 1/n): ~4.5 s.e.
    flat = xt.reshape(n, -1)
    target = (eps - x1).reshape(n, -1)
    linear = flat @ torch.linalg.lstsq(flat, target).solution
    assert ((target - v.reshape(n, -1)) ** 2).mean() < ((target - linear) ** 2).mean()


def test_texture_field_without_texture_is_the_smooth_gaussian():
    f = TexturePatchField(height=16, width=16, texture_variance=1e-12, region=6, positions=((2, 2), (8, 8)), k0=1 / 16)
    g = GaussianField(height=16, width=16, exponent=3.0, k0=1 / 16)
    z = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert (f.velocity(z, 0.3) - g.velocity(z, 0.3)).abs().max() < 1e-8
    assert (f.velocity(torch.nn.functional.avg_pool2d(z, 2), 0.3, 2)
            - g.velocity(torch.nn.functional.avg_pool2d(z, 2), 0.3, 2)).abs().max() < 1e-8


def test_texture_samples_and_metrics():
    f = TexturePatchField(height=16, width=16, region=6, positions=((2, 2), (8, 8)), k0=1 / 16)
    x = f.sample(3000, torch.Generator().manual_seed(2))
    expected_var = 1 + f.texture_variance * 36 / 256
    assert x.var().item() == pytest.approx(expected_var, rel=0.03)
    a = region_metrics(x[:1500], f)
    b = region_metrics(x[1500:], f)
    assert a["texture"] == pytest.approx(b["texture"], rel=0.1) and a["texture"] > 3 * a["background"]
    be = GaussianBackend(f)
    xs, res = run(be, preset("flux-dev-4x"), 4)
    hit = selection_hit_rate(res, xs, f)
    assert 0.0 <= hit <= 1.0
    with pytest.raises(ValueError, match="leaves the 16x16 field"):
        TexturePatchField(height=16, width=16, region=6, positions=((12, 12),))
