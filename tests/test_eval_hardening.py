"""``ralu eval`` against what careful use finds (issue 27): configuration strings fuzzed, a
configuration's spellings and defaults, repeated options, numeric flags out of range on either
backend, damaged and foreign files in the output folder, a folder of earlier results, refused
runs that must leave nothing behind, and the metric models offline."""

import json
import math
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ralu_torch.cli import main
from ralu_torch.evaluation.configs import MAX_STEPS, TAYLORSEER_DEFAULTS, Config, parse_config, parse_configs

# -- configuration strings ------------------------------------------------------------------------

NUMBERS = ["0", "1", "2", "3", "4", "04", "007", "10000", "10001", "99999999999999999999", "-1", "+2", "0.05",
           "0.050", ".5", "1e-2", "1e400", "-0", "nan", "NaN", "inf", "-inf", "Infinity", "1_0", " 3", "3 ", "٤",
           "²", "0x1", "1.5", "none", ""]
PIECES = ["baseline", "baseline:", "exact", "flux-dev-7x", "flux-dev-4x", "sd3-medium-7x", "missing.json", "+",
          ":", ",", "=", "+taylorseer", "+taylorseer:", "interval=", "warmup=", "cooldown=", "order=", "lite=",
          "predicted_cost=", "+fbcache", "+fbcache:", "threshold=", "+pab", "+pab:", "skip=", "+heun", "+euler",
          "+unipc", "+upsample:", "latent", "token", "+kept-noise:", "exact", "unit", "+parameters:", "default",
          "optimised", "+select:", "edges", "authors", "+ablation:", "naive-upsampling", "no-mixed-stage"]
config_text = st.one_of(
    st.lists(st.sampled_from(PIECES + NUMBERS), min_size=1, max_size=9).map("".join),
    st.builds(lambda b, n, mods: f"{b}:{n}" + "".join(mods), st.just("baseline"), st.sampled_from(NUMBERS),
              st.lists(st.sampled_from(["+heun", "+taylorseer", "+fbcache:0.1", "+pab:3"]), max_size=2)),
    st.builds(lambda p, c, items: f"{p}+{c}:" + ",".join(items), st.sampled_from(["flux-dev-7x", "baseline:5"]),
              st.sampled_from(["taylorseer", "fbcache", "pab"]),
              st.lists(st.builds(lambda k, v: f"{k}={v}" if k else v,
                                 st.sampled_from(["", "interval", "warmup", "cooldown", "order", "lite",
                                                  "predicted_cost", "threshold", "skip"]),
                                 st.sampled_from(NUMBERS)), max_size=3)),
    st.text(max_size=30),
)


def numbers_of(c: Config) -> list:
    return ([c.steps] if c.steps is not None else []) + ([v for _, v in c.cache.params] if c.cache else [])


@settings(max_examples=400, deadline=None)
@given(config_text)
def test_a_configuration_string_parses_to_one_canonical_form_or_is_one_error(text):
    """Anything either parses to a configuration whose numbers are finite and in range and whose
    canonical form reads back as itself, or is one ValueError line: never another exception."""
    try:
        c = parse_config(text)
    except ValueError as err:
        assert "\n" not in str(err) and str(err), repr(err)
        return
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers_of(c)), c
    assert all(0 <= v <= MAX_STEPS for v in numbers_of(c)), c
    again = parse_config(c.text)
    assert again == c and again.text == c.text, (text, c.text, again.text)
    assert all(not isinstance(v, float) or repr(v) in c.text for v in numbers_of(c))


@pytest.mark.parametrize("spellings", [
    ["baseline:4", "baseline:04", "baseline:0004"],
    ["flux-dev-7x", "flux-dev-7x+upsample:latent", "flux-dev-7x+parameters:default+kept-noise:exact",
     "flux-dev-7x+select:edges"],
    ["flux-dev-7x+fbcache", "flux-dev-7x+fbcache:0.05", "flux-dev-7x+fbcache:threshold=0.050",
     "flux-dev-7x+fbcache:5e-2"],
    ["flux-dev-7x+pab", "flux-dev-7x+pab:2", "flux-dev-7x+pab:skip=02"],
    ["flux-dev-7x+taylorseer", "flux-dev-7x+taylorseer:interval=5", "flux-dev-7x+taylorseer:warmup=3,order=1,lite=0",
     "flux-dev-7x+taylorseer:cooldown=none,predicted_cost=0"],
    ["flux-dev-7x+taylorseer:interval=3,warmup=2", "flux-dev-7x+taylorseer:warmup=02,interval=3,order=1"],
    ["flux-dev-4x+heun+upsample:token", "flux-dev-4x+upsample:token+heun"],
])
def test_spellings_and_defaults_of_one_configuration_are_one_configuration(spellings):
    parsed = [parse_config(s) for s in spellings]
    assert len({c.text for c in parsed}) == 1 and all(c == parsed[0] for c in parsed)
    assert parsed[0].text == spellings[0]                  # the shortest spelling is the canonical one
    with pytest.raises(ValueError, match=re.escape(f"is the same as {spellings[0]!r} (both are {spellings[0]})")):
        parse_configs([spellings[0], spellings[-1]])


def test_a_schedule_file_is_one_configuration_under_each_of_its_paths(tmp_path, monkeypatch):
    from ralu_schedule import preset

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    preset("flux-dev-7x").save("s.json")
    spellings = ["s.json", "./s.json", "sub/../s.json", str(tmp_path / "s.json")]
    assert {parse_config(s).text for s in spellings} == {"s.json"}
    with pytest.raises(ValueError, match="is the same as 's.json'"):
        parse_configs(["s.json", str(tmp_path / "s.json")])


def test_euler_is_the_analytic_backends_own_solver_and_not_a_second_configuration():
    assert [c.text for c in parse_configs(["flux-dev-7x", "flux-dev-7x+euler"])] == ["flux-dev-7x", "flux-dev-7x+euler"]
    with pytest.raises(ValueError, match="the analytic backend's solver is Euler"):
        parse_configs(["flux-dev-7x", "flux-dev-7x+euler"], analytic=True)


@pytest.mark.parametrize("text, says", [
    ("flux-dev-7x+taylorseer:interval=2,interval=3", "taylorseer option interval given twice"),
    ("flux-dev-7x+taylorseer:lite=0,lite=1", "taylorseer option lite given twice"),
    ("flux-dev-7x+fbcache:threshold=0.1,threshold=0.2", "fbcache option threshold given twice"),
    ("flux-dev-7x+fbcache:0.1,threshold=0.2", "fbcache option threshold given twice"),
    ("flux-dev-7x+pab:2,3", "pab option skip given twice"),
    ("flux-dev-7x+upsample:token+upsample:latent", "upsample given twice"),
    ("flux-dev-7x+fbcache:nan", "fbcache takes a threshold in [0, 1]"),
    ("flux-dev-7x+fbcache:inf", "fbcache takes a threshold in [0, 1]"),
    ("flux-dev-7x+taylorseer:predicted_cost=nan", "predicted_cost needs a decimal number"),
    ("flux-dev-7x+taylorseer:interval=1_0", "interval needs a decimal number"),
    ("flux-dev-7x+taylorseer:interval=20000", f"interval must be at most {MAX_STEPS}"),
    ("flux-dev-7x+pab:20000", f"an integer skip range from 1 to {MAX_STEPS}"),
    ("baseline:nan", "baseline:STEPS"),
    ("baseline:٤", "baseline:STEPS"),
    ("baseline:²", "baseline:STEPS"),
    ("baselines:4", "baseline:STEPS"),
])
def test_repeats_and_non_finite_or_foreign_numbers_are_refused_naming_them(text, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_config(text)


def test_taylorseer_defaults_are_the_policys():
    from ralu_schedule.caching import TaylorSeerPolicy

    assert parse_config("flux-dev-7x+taylorseer").cache.policy == TaylorSeerPolicy()
    assert TAYLORSEER_DEFAULTS["lite"] == 0 and TAYLORSEER_DEFAULTS["interval"] == TaylorSeerPolicy().interval


# -- the analytic eval's memory ----------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 5, 11, 37])
def test_texture_draws_gathered_in_chunks_are_the_same_bit_for_bit(n, monkeypatch):
    """The texture field's samples gather each sample's covariance factor a chunk at a time (the
    analytic eval's 1024 reference draws at 32x32 held 8 GB at once): the values are unchanged."""
    import torch

    import ralu_torch.backends.gaussian as gaussian
    from ralu_torch.evaluation.analytic import field_for

    field = field_for("texture", texture_size=16)
    N = 16 * 16
    monkeypatch.setattr(gaussian, "_GATHER_VALUES", 1 << 62)           # one gather, as before
    whole = field.sample(n, torch.Generator().manual_seed(n))
    monkeypatch.setattr(gaussian, "_GATHER_VALUES", 3 * N * N)         # chunks of 3 samples
    assert torch.equal(field.sample(n, torch.Generator().manual_seed(n)), whole)
    chunks = gaussian._chunks(n, 3)
    assert [lo for lo, _ in chunks][0] == 0 and chunks[-1][1] == n and all(hi - lo >= min(n, 2) for lo, hi in chunks)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
