"""The communication model of context parallelism (ralu_schedule.communication): its byte counts
against a count from first principles (who sends what to whom in each collective), its time
model's bounds, ``ralu-schedule cost --context-parallel``, and its refusals. The traced count (the
bytes of a real two-process run) is in tests/test_parallel.py."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ralu_schedule import get_preset
from ralu_schedule.cli import main
from ralu_schedule.communication import call_bytes, parallel_cost, split_attention
from ralu_schedule.cost import MODELS, TransformerSpec, WanSpec


def shares(total: int, n: int) -> list:
    """How diffusers' split gives ``total`` tokens to ``n`` ranks (torch's ``tensor_split``: the
    first ``total mod n`` ranks one more)."""
    return [total // n + (1 if r < total % n else 0) for r in range(n)]


def exchanged(spec, image: int, text: int, n: int, mode: str) -> list:
    """Values each rank receives in one call, counted transfer by transfer: ``sent[j][r]`` is what
    rank ``j`` sends rank ``r`` in each collective, as diffusers lays the tensors out."""
    layers, joint, out = split_attention(spec, image, text)     # joint: the tokens the split attention sees
    mine = [a + b for a, b in zip(shares(image, n), shares(joint - image, n))]     # each stream split on its own
    heads = spec.width // n                                                         # per-rank head share x head dim
    got = [0] * n
    for r in range(n):
        for j in range(n):
            if j == r:
                continue
            if mode == "ulysses":
                got[r] += layers * 3 * mine[j] * heads      # q, k, v: rank j's tokens, rank r's heads
                got[r] += layers * mine[r] * heads          # the output: rank r's tokens, rank j's heads
            else:
                got[r] += layers * 2 * mine[j] * spec.width  # ring: rank j's keys and values, all heads
            got[r] += shares(image, n)[j] * out             # proj_out's gather of rank j's image tokens
    return got


SPECS = [TransformerSpec(family="flux", double=2, single=3, heads=8, head_dim=4), WanSpec(layers=3, heads=8, head_dim=4,
                                                                                          ffn=16)]


@given(spec=st.sampled_from(SPECS), image=st.integers(8, 5000), text=st.integers(1, 600),
       n=st.sampled_from([2, 4, 8]), mode=st.sampled_from(["ulysses", "ring"]))
def test_the_bytes_per_call_are_the_ranks_mean_of_the_transfers(spec, image, text, n, mode):
    """Exact for every count: equal splits give every rank the formula's bytes, uneven ones
    (diffusers' uneven split) give ranks that differ by a token's worth around it."""
    got = exchanged(spec, image, text, n, mode)
    assert call_bytes(spec, image, text, n, mode, dtype_bytes=1) == pytest.approx(sum(got) / n, rel=1e-12)
    if image % n == 0 and text % n == 0:
        assert len(set(got)) == 1


def test_ring_moves_n_over_2_times_ulysses_and_one_rank_moves_nothing():
    spec = MODELS["flux-dev"].transformer
    for n in (2, 4, 8):
        ulysses, ring = (call_bytes(spec, 4096, 512, n, mode) - call_bytes(spec, 4096, 0, n, mode)
                         + call_bytes(spec, 0, 512, n, mode) for mode in ("ulysses", "ring"))
        assert ring == pytest.approx(n / 2 * ulysses)
    assert call_bytes(spec, 4096, 512, 1) == 0.0


def test_wan_moves_nothing_for_its_text():
    spec = MODELS["wan2.1-t2v-14b"].transformer
    assert call_bytes(spec, 18480, 512, 4) == call_bytes(spec, 18480, 1, 4)


def test_speedup_is_bounded_by_the_flop_ratio_and_reaches_it_with_fast_links():
    lay = get_preset("flux-dev-7x").layout
    slow = parallel_cost(lay, "flux-dev", (1024, 1024), ranks=4, link_gbps=100)
    fast = parallel_cost(lay, "flux-dev", (1024, 1024), ranks=4, link_gbps=1e9)
    assert slow.speedup < fast.speedup < fast.flop_ratio <= 4
    assert fast.speedup == pytest.approx(fast.flop_ratio, rel=1e-6)
    assert slow.flop_ratio == fast.flop_ratio
    # every call of every stage is priced: 2 + 3 + 5 calls
    assert [s.calls for s in slow.stages] == [2, 3, 5]


def test_cfg_parallel_halves_each_ranks_calls_and_adds_one_gather_a_call():
    lay = get_preset("wan-720p-7x").layout
    one = parallel_cost(lay, "wan2.1-t2v-14b", (704, 1280), ranks=4, link_gbps=400, frames=81)
    two = parallel_cost(lay, "wan2.1-t2v-14b", (704, 1280), ranks=4, link_gbps=400, frames=81, cfg_parallel=True)
    assert two.gpus == 8 and [2 * b.calls for b in two.stages] == [a.calls for a in one.stages]
    for a, b in zip(one.stages, two.stages):
        assert b.cfg_bytes == b.calls * a.tokens * 64 * 4          # float32 velocities of 16 channels x 2 x 2
    assert two.compute_seconds < one.compute_seconds


@pytest.mark.parametrize("model", ["sd3-medium", "z-image", "chroma"])
def test_models_without_a_plan_are_refused_by_name(model):
    with pytest.raises(ValueError, match=f"{model}'s transformer has no context-parallel plan"):
        parallel_cost(get_preset("flux-dev-7x").layout, model, ranks=2, link_gbps=400)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(ranks=0, link_gbps=400), "ranks must be"),
    (dict(ranks=2, link_gbps=0), "must be positive"),
    (dict(ranks=2, link_gbps=400, gpu_tflops=-1), "must be positive"),
    (dict(ranks=2, link_gbps=float("nan")), "link_gbps"),
    (dict(ranks=2, link_gbps=400, mode="tree"), "mode must be one of ulysses, ring"),
    (dict(ranks=2, link_gbps=400, cfg_parallel=True), "flux-dev makes one transformer call per step"),
])
def test_bad_input_is_refused(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        parallel_cost(get_preset("flux-dev-7x").layout, "flux-dev", **kwargs)


def test_the_cli_prints_the_table_and_json(capsys):
    assert main(["cost", "flux-dev-7x", "--context-parallel", "4", "--link-gbps", "3600"]) == 0
    text = capsys.readouterr().out
    p = parallel_cost(get_preset("flux-dev-7x").layout, "flux-dev", (1024, 1024), ranks=4, link_gbps=3600)
    assert f"predicted speed-up  {p.speedup:9.2f}x" in text and f"FLOP ratio          {p.flop_ratio:9.2f}x" in text
    assert "on 4 GPUs: 4 ranks (ulysses)" in text
    assert main(["cost", "wan-720p-7x", "--context-parallel", "2", "--cfg-parallel", "--ring", "--link-gbps", "400",
                 "--gpu-tflops", "600", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["parallel"]
    assert (got["gpus"], got["mode"], got["gpu_tflops"], got["cfg_parallel"]) == (4, "ring", 600.0, True)


@pytest.mark.parametrize("argv, msg", [
    (["--ring"], "--ring prices several GPUs: give --context-parallel N"),
    (["--link-gbps", "400"], "--link-gbps prices several GPUs"),
    (["--context-parallel", "2"], "several GPUs need --link-gbps"),
    (["--context-parallel", "0", "--link-gbps", "4"], "--context-parallel must be a positive number of ranks, got 0"),
    (["--context-parallel", "2", "--link-gbps", "4", "--model", "sd3-medium"], "sd3-medium's transformer has no"),
    (["--context-parallel", "2", "--link-gbps", "4", "--cache", "taylorseer"], "--cache with several GPUs"),
    (["--context-parallel", "2", "--link-gbps", "4", "--references", "stage"],
     "--references and --reference-images with several GPUs are not priced"),
    (["--context-parallel", "2", "--link-gbps", "4", "--model", "flux-kontext-dev"],
     "flux-kontext-dev sees reference images in every call"),
])
def test_the_cli_refuses_in_one_line(argv, msg, capsys):
    assert main(["cost", "flux-dev-7x", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "\n" not in err
