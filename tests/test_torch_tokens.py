import pytest
import torch

from ralu_torch.tokens import (TokenSet, child_source, check_mode, pack, pool_children, to_latent, unpack,
                               upsample_values)


def latent_nearest(x, f):
    return x.repeat_interleave(f, 2).repeat_interleave(f, 3)


def test_pack_matches_diffusers_flux_packing():
    from diffusers import FluxPipeline

    lat = torch.randn(2, 16, 8, 12)
    ref = FluxPipeline._pack_latents(lat, 2, 16, 8, 12)
    assert torch.equal(pack(lat), ref)
    assert torch.equal(unpack(ref, (4, 6)), lat)


@pytest.mark.parametrize("f", [2, 3])
def test_latent_mode_is_nearest_upsampling_of_the_latent(f):
    low = torch.randn(2, 16, 4, 6)
    ts = TokenSet.regular(2, (2 * f, 3 * f), f)
    new, parent, slot = ts.upsample(ts.is_coarse(), f)
    up = upsample_values(pack(low), parent, slot, child_source(f, 64, "latent"))
    assert torch.equal(unpack(up, new.grid), latent_nearest(low, f))


def test_token_mode_repeats_packed_tokens():
    low = torch.randn(1, 16, 4, 6)
    ts = TokenSet.regular(1, (4, 6), 2)
    new, parent, slot = ts.upsample(ts.is_coarse(), 2)
    up = upsample_values(pack(low), parent, slot, child_source(2, 64, "token"))
    tok = pack(low).view(1, 2, 3, 64)
    expected = tok.repeat_interleave(2, 1).repeat_interleave(2, 2).reshape(1, 24, 64)
    assert torch.equal(up, expected)


@pytest.mark.parametrize("mode", ["latent", "token"])
@pytest.mark.parametrize("f", [2, 3])
def test_every_parent_value_is_copied_factor_squared_times(mode, f):
    src = child_source(f, 64, mode)
    counts = torch.bincount(src.reshape(-1), minlength=64)
    assert torch.all(counts == f * f)


def test_positions_of_a_partial_upsampling():
    ts = TokenSet.regular(2, (4, 6), 2)
    sel = torch.zeros(2, 6, dtype=torch.bool)
    sel[0, 1] = True   # coarse token at (0, 1)
    sel[1, 5] = True   # coarse token at (1, 2)
    new, parent, slot = ts.upsample(sel, 2)
    pos = new.positions()
    children = pos[0][slot[0] >= 0]
    assert children.tolist() == [[0.0, 1.0], [0.0, 1.5], [0.5, 1.0], [0.5, 1.5]]  # parent + half-steps
    kept = pos[0][slot[0] < 0]
    assert torch.equal(kept, kept.round())  # low-res tokens keep their integer grid positions
    for b, parent_pos in [(0, (0.0, 1.0)), (1, (1.0, 2.0))]:
        ch = pos[b][slot[b] >= 0]
        assert torch.equal(ch - torch.tensor(parent_pos, dtype=ch.dtype),
                           torch.tensor([[0, 0], [0, 0.5], [0.5, 0], [0.5, 0.5]], dtype=ch.dtype))


def test_final_positions_are_the_raster_grid_once():
    ts = TokenSet.regular(3, (6, 8), 2)
    g = torch.Generator().manual_seed(0)
    sel = torch.zeros(3, 12, dtype=torch.bool)
    for b in range(3):
        sel[b, torch.randperm(12, generator=g)[:4]] = True
    mid, _, _ = ts.upsample(sel, 2)
    final, _, _ = mid.upsample(mid.is_coarse(), 2)
    full = TokenSet.regular(3, (6, 8), 1)
    assert torch.equal(final.positions(), full.positions().to(final.positions().dtype))
    assert torch.equal(final.positions(), final.positions().round())


def test_to_latent_paints_mixed_sets():
    low = torch.randn(1, 16, 4, 6)
    ts = TokenSet.regular(1, (4, 6), 2)
    sel = torch.zeros(1, 6, dtype=torch.bool)
    sel[0, 2] = True
    src = child_source(2, 64, "latent")
    new, parent, slot = ts.upsample(sel, 2)
    x = upsample_values(pack(low), parent, slot, src)
    assert torch.equal(to_latent(x, new), latent_nearest(low, 2))


def test_pool_children_is_the_adjoint_of_upsampling():
    ts = TokenSet.regular(2, (4, 6), 2)
    sel = torch.rand(2, 6, generator=torch.Generator().manual_seed(3)) > 2  # none
    sel[:, :3] = True
    new, parent, slot = ts.upsample(sel, 2)
    src = child_source(2, 64, "latent")
    x, y = torch.randn(2, 6, 64, dtype=torch.float64), torch.randn(2, new.length, 64, dtype=torch.float64)
    child = (slot >= 0)[..., None]
    lhs = (upsample_values(x, parent, slot, src) * y * child).sum()
    rhs = (x * pool_children(y, parent, slot, src, 6)).sum()
    assert torch.allclose(lhs, rhs)


def test_errors():
    with pytest.raises(ValueError, match="upsample must be one of latent, token"):
        check_mode("bilinear")
    ts = TokenSet.regular(2, (4, 6), 2)
    sel = torch.zeros(2, 6, dtype=torch.bool)
    sel[0, 0] = True
    with pytest.raises(ValueError, match="same number of tokens"):
        ts.upsample(sel, 2)


def test_latent_tokens_reads_each_token_at_its_own_size():
    """The rule conditions follow: on a uniform set of size D, the latent average-pooled by D;
    on a mixed set, each token the pooled patch of the cells it covers; and the left inverse
    of painting (to_latent) for any set."""
    from ralu_torch.tokens import latent_tokens

    g = torch.Generator().manual_seed(0)
    lat = torch.randn(2, 4, 16, 24, generator=g)                  # grid (8, 12)
    coarse = TokenSet.regular(2, (8, 12), 2)
    assert torch.allclose(latent_tokens(lat, coarse), pack(torch.nn.functional.avg_pool2d(lat, 2)))
    assert torch.equal(latent_tokens(lat, TokenSet.regular(2, (8, 12), 1)), pack(lat))
    sel = torch.zeros(2, 24, dtype=torch.bool)
    sel[0, [1, 5, 7]] = sel[1, [0, 2, 23]] = True
    mixed, _, _ = coarse.upsample(sel, 2)
    x = torch.randn(2, mixed.length, 16, generator=g)
    assert torch.allclose(latent_tokens(to_latent(x, mixed), mixed), x, atol=1e-6)
    vals = latent_tokens(lat, mixed)
    fine = (mixed.size == 1)[0]
    cells = mixed.cells[0, fine]
    assert torch.equal(vals[0, fine], pack(lat)[0, cells[:, 0] * 12 + cells[:, 1]])
