"""Selection policies and the noise-sampler hook.

The authors' rule is checked against OpenCV itself (``cv2``, installed by the test extra
only): the torch edge detector must give ``cv2.Canny``'s edges, and the token selection
must agree with one computed from OpenCV's edges, on natural and synthetic images.
"""

import cv2
import numpy as np
import pytest
import torch

from ralu_torch import RALU
from ralu_torch.analysis.selection import natural_images, overlap, synthetic_images
from ralu_torch.edges import authors_edge_map, authors_grey, edge_counts
from ralu_torch.noise import draw
from ralu_torch.sampler import sample
from ralu_torch.selection import AuthorsSelection, select_top, selection_policy
from ralu_torch.tokens import TokenSet
from tiny import embeds, tiny_flux

PPT = 16


def opencv_edges(image: torch.Tensor) -> torch.Tensor:
    """The authors' pipeline with OpenCV: clip to [0, 1], 8 bits, grey, Canny(100, 200)."""
    u8 = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy().copy()
    grey = cv2.cvtColor(u8, cv2.COLOR_RGB2GRAY)
    return torch.from_numpy(cv2.Canny(grey, 100, 200) > 0)


def images():
    return {**natural_images(), **synthetic_images()}


@pytest.mark.parametrize("name", sorted(images()))
def test_authors_edges_are_opencv_canny(name):
    img = images()[name]
    ours = authors_edge_map(img)
    for b in range(img.shape[0]):
        u8 = (img[b].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy().copy()
        assert (authors_grey(img[b:b + 1])[0].numpy() == cv2.cvtColor(u8, cv2.COLOR_RGB2GRAY)).all()
        ref = opencv_edges(img[b])
        assert ref.sum() > 0 or name.startswith("dark")
        assert torch.equal(ours[b], ref), f"{int((ours[b] != ref).sum())} of {ref.numel()} pixels differ"


@pytest.mark.parametrize("fraction", [0.1, 0.3])
@pytest.mark.parametrize("name", sorted(images()))
def test_authors_selection_agrees_with_opencv_rule(name, fraction):
    img = images()[name]
    B, _, H, W = img.shape
    tokens = TokenSet.regular(B, (2 * H // PPT, 2 * W // PPT), 2)
    ours = AuthorsSelection(PPT)(img, tokens, fraction, torch.Generator().manual_seed(3))
    counts = torch.stack([edge_counts(opencv_edges(img[b])[None], PPT)[0] for b in range(B)]).float()
    tie = torch.sigmoid(draw((B, *tokens.frame), torch.Generator().manual_seed(3), "cpu")) / 2
    reference = select_top(tokens, counts + tie, fraction)
    assert (ours == reference).float().mean() >= 0.95


def test_dark_images_have_no_authors_edges_and_edges_policy_still_sees_them():
    """The authors' clip to [0, 1] blacks out everything darker than mid-grey."""
    photo = natural_images()["photo"]
    dark = photo * 0.5 - 0.5                               # the same photo, all below mid-grey
    assert authors_edge_map(dark).sum() == 0 and authors_edge_map(photo).sum() > 0
    tokens = TokenSet.regular(1, (2 * photo.shape[-2] // PPT, 2 * photo.shape[-1] // PPT), 2)
    pick = lambda s, img, seed: selection_policy(s, PPT)(img, tokens, 0.3, torch.Generator().manual_seed(seed))  # noqa: E731
    assert not torch.equal(pick("authors", dark, 0), pick("authors", dark, 1))   # pure tie-break noise
    assert torch.equal(pick("edges", dark, 0), pick("edges", dark, 1))          # deterministic, edge-driven
    assert overlap(pick("edges", dark, 0), pick("edges", photo, 0)) > 0.8


def test_selection_policies_through_the_sampler():
    pipe = tiny_flux()
    seen = []

    def corner_first(estimate, tokens, fraction, generator):
        seen.append((tuple(estimate.shape), tokens.length, fraction))
        return select_top(tokens, -torch.arange(tokens.frame[0] * tokens.frame[1], dtype=torch.float32)
                          .view(1, *tokens.frame).expand(tokens.batch, -1, -1), fraction)

    outs = {}
    for select in ("edges", "authors", "random", corner_first):
        out = RALU(pipe, "flux-dev-7x", select=select)(**embeds(2), height=128, width=128, output_type="latent",
                                                         generator=torch.Generator().manual_seed(0),
                                                         record_transitions=True)
        outs[select if isinstance(select, str) else "callable"] = out
        again = RALU(pipe, "flux-dev-7x", select=select)(**embeds(2), height=128, width=128, output_type="latent",
                                                           generator=torch.Generator().manual_seed(0))
        assert torch.equal(out.images, again.images)                # same seed, same bits, any policy
        assert out.transitions[0].selected.sum(dim=1).tolist() == [2, 2]   # the shared count rule
    assert seen and seen[0] == ((2, 3, 64, 64), 16, 0.1)
    assert outs["callable"].transitions[0].selected[:, :2].all()
    assert not torch.equal(outs["random"].transitions[0].selected, outs["edges"].transitions[0].selected)


@pytest.mark.parametrize("policy, msg", [
    (lambda e, t, f, g: t.is_coarse(), "must mark 2 tokens per image"),
    (lambda e, t, f, g: t.is_coarse().float(), "must return a bool tensor of shape"),
    (lambda e, t, f, g: ~t.is_coarse() | t.is_coarse(), "must mark"),
])
def test_bad_selection_policy_results(policy, msg):
    with pytest.raises(ValueError, match=msg):
        RALU(tiny_flux(), "flux-dev-7x", select=policy)(**embeds(), height=128, width=128, generator=torch.Generator())


def test_unknown_selection_name():
    with pytest.raises(ValueError, match="select must be one of edges, authors, random, condition or a callable"):
        RALU(tiny_flux(), select="canny")


def test_noise_sampler_hook():
    pipe = tiny_flux()
    calls = []

    def counted(shape, generator, device):
        calls.append(tuple(shape))
        return draw(shape, generator, device)

    base = RALU(pipe, "flux-dev-7x")(**embeds(), height=128, width=128, output_type="latent",
                                     generator=torch.Generator().manual_seed(0)).images
    hooked = RALU(pipe, "flux-dev-7x", noise_sampler=counted)(**embeds(), height=128, width=128, output_type="latent",
                                                              generator=torch.Generator().manual_seed(0)).images
    assert torch.equal(base, hooked)                   # the default sampler, routed through the hook
    assert calls == [(1, 16, 8, 8), (1, 22, 64), (1, 64, 64)]   # first noise, then each re-injection
    with pytest.raises(ValueError, match=r"noise_sampler must return a tensor of shape \(1, 16, 8, 8\)"):
        RALU(pipe, noise_sampler=lambda s, g, d: torch.zeros(3))(**embeds(), height=128, width=128)
    with pytest.raises(ValueError, match="noise_sampler must be a callable"):
        RALU(pipe, noise_sampler=3)


def test_sample_takes_a_plan_and_refuses_other_types():
    from ralu_schedule import preset
    from ralu_torch.backends.gaussian import GaussianBackend, GaussianField

    be = GaussianBackend(GaussianField(height=16, width=16))
    s = preset("flux-dev-7x")
    a = sample(be, s, None, batch=1, grid=be.grid, generator=torch.Generator().manual_seed(0))
    b = sample(be, s.plan, None, batch=1, grid=be.grid, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.latents, b.latents)
    with pytest.raises(ValueError, match="schedule must be a ralu_schedule.Schedule or Plan, got dict"):
        sample(be, {}, None, batch=1, grid=be.grid, generator=None)
    assert np.isfinite(a.latents.numpy()).all()


@pytest.mark.parametrize("thresholds, msg", [
    ((0.5,), r"edge_thresholds must be two numbers \(low, high\), got \(0.5,\)"),
    ((0.2, 0.1), r"edge_thresholds must satisfy 0 < low < high < 1, got \(0.2, 0.1\)"),
    ((0.1, 1.5), "0 < low < high < 1"),
])
def test_edge_thresholds_are_checked_at_construction(thresholds, msg):
    with pytest.raises(ValueError, match=msg):
        RALU(tiny_flux(), edge_thresholds=thresholds)
    with pytest.raises(ValueError, match=msg):        # also when the policy does not use them
        RALU(tiny_flux(), select="authors", edge_thresholds=thresholds)
    with pytest.raises(ValueError, match=msg):        # and on the sampler's own path
        selection_policy("edges", PPT, thresholds)
