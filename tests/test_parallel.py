"""Several ranks on one generation (ralu_torch.parallel, docs/parallel.md): RALU under diffusers'
context parallelism and with its guidance branches on two ranks equals the same run in one
process, for every family with a context-parallel plan; the families without one are refused
by name; the bytes the cost model prices are the bytes the collectives move.

The checks that need several processes run in ONE launch of two gloo processes
(``tests/parallel_worker.py``, which holds the test-only adaptations of the CPU): starting a
process costs many seconds here, so every case runs in it and the tests below read its report.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from parallel_worker import CLI
from ralu_torch.cli import main
from ralu_torch.testing import tiny_pipeline

TOLERANCE = 1e-5
HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory, model_dir):
    """The two ranks' reports of tests/parallel_worker.py (one launch for the whole module), and
    the folder where its ``ralu generate`` runs wrote."""
    out = tmp_path_factory.mktemp("parallel")
    root = HERE.parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(root), os.environ.get(
        "PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           str(HERE / "parallel_worker.py"), str(out), str(model_dir)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=root)
    said = f"rc {r.returncode}\nstdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-4000:]}"
    ranks = []
    for k in range(2):
        path = out / f"rank{k}.json"
        assert path.exists(), said
        ranks.append(json.loads(path.read_text()))
    errors = [rk.get("error") for rk in ranks if rk.get("error")]
    assert not errors, errors[0]
    assert r.returncode == 0, said
    return ranks + [out]


FAMILIES = ("flux", "flux2", "qwen-image", "wan", "wan-2-experts")
RUNS = [f"{f} {stages} batch {b}" for f in FAMILIES for stages in ("1-stage", "3-stage") for b in (1, 2)]


@pytest.mark.multiprocess
@pytest.mark.parametrize("case", RUNS)
def test_context_parallel_on_two_ranks_equals_one_process(report, case):
    """96x96 (9 tokens in the first stage, 15 in the mixed one; Wan: 3 latent frames, 27), the
    uneven split, each rank's output against the same run made in one process."""
    for rank in report[:2]:
        got = rank[case]
        assert got["diff"] <= TOLERANCE * max(1.0, got["scale"]), (case, got)
        assert got["ranks_agree"], case                 # both ranks hold the same gathered latents
        assert got["collectives"] > 0, case             # the transformer really was split


@pytest.mark.multiprocess
@pytest.mark.parametrize("family", FAMILIES)
def test_cfg_parallel_on_two_ranks_equals_one_process(report, family):
    for rank in report[:2]:
        got = rank[f"{family} cfg-parallel"]
        assert got["diff"] <= TOLERANCE * max(1.0, got["scale"]) and got["ranks_agree"], got


@pytest.mark.multiprocess
def test_the_default_equal_split_runs_even_counts_and_refuses_an_odd_one_before_any_model_call(report):
    for rank in report[:2]:
        assert rank["flux equal split batch 2"]["diff"] <= TOLERANCE
        refusal = rank["refusal"]
        assert refusal["collectives"] == 0
        assert "stage 1 holds 9 tokens per image, which 2 ranks cannot split equally" in refusal["message"]
        assert "ulysses_anything=True" in refusal["message"]


@pytest.mark.multiprocess
def test_the_cost_model_counts_the_bytes_the_collectives_move(report):
    """The all-to-alls and the output gather of a traced run (equal split, float32) carry what
    ralu_schedule.communication.call_bytes prices, call by call summed over the stages."""
    from ralu_schedule.communication import call_bytes
    from ralu_schedule.cost import TransformerSpec

    for rank in report[:2]:
        got = rank["flux equal split batch 2"]
        spec = TransformerSpec(**got["spec"])
        want = got["batch"] * sum(calls * call_bytes(spec, tokens, got["text_tokens"], 2, "ulysses", got["dtype_bytes"])
                                  for calls, tokens in zip(got["calls"], got["stage_tokens"]))
        assert got["bytes"] == want
        # per call: (1 double + 1 single block) x 4 all-to-alls + the output gather
        assert got["collectives"] == sum(got["calls"]) * (2 * 4 + 1)


@pytest.mark.multiprocess
def test_the_ranks_must_draw_from_the_same_generator(report):
    for rank in report[:2]:
        assert "generators in the same state" in rank["generator refusal"]["message"]
        assert rank["generator refusal"]["collectives"] == 0
        assert rank["no generator"]["ranks_agree"]


@pytest.mark.multiprocess
def test_cfg_parallel_without_guidance_is_refused(report):
    for rank in report[:2]:
        assert "this call makes one transformer call per step" in rank["cfg refusal"]["message"]


@pytest.mark.multiprocess
def test_reference_images_under_context_parallelism_are_refused_before_any_model_call(report):
    for rank in report[:2]:
        refusal = rank["reference refusal"]
        assert "reference images" in refusal["message"] and "not supported" in refusal["message"], refusal
        assert refusal["collectives"] == 0


@pytest.mark.multiprocess
def test_generate_with_context_parallel_writes_one_process_s_images_from_one_process(report, model_dir, tmp_path,
                                                                                    capsys):
    """``ralu generate --context-parallel 2`` under torchrun (two processes, gloo): the writer is the
    first rank and the only one; its images are one process's, with the same recipe. FLUX's split
    attention sums in another order (diffusers' Ulysses joins each rank's text and image shards), so
    a value within 1e-5 of one process's can round to the neighbouring 8-bit level: pixels may differ
    by one level, never more. The recipe records the device, and accelerate names each process's
    ``cpu:0``: the one-process run names the same."""
    import numpy as np
    from PIL import Image

    out = report[2]
    writer, helper = report[0]["cli"], report[1]["cli"]
    assert writer["codes"] == helper["codes"] == [0, 0]
    assert helper["writes"] == []
    assert [Path(w).relative_to(out).as_posix() for w in writer["writes"]] == [
        "cp.png", "cp-dir/00000.png", "cp-dir/manifest.part-0.jsonl", "cp-dir/00001.png",
        "cp-dir/manifest.part-0.jsonl"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                  # as the launched processes run (a thread count can change rounding)
    try:
        one = ["generate", "--model", str(model_dir), *CLI, "--device", "cpu:0"]
        assert main([*one, "--out", str(tmp_path / "cp.png")]) == 0
        assert main([*one, "--num-images", "2", "--out-dir", str(tmp_path / "cp-dir")]) == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    for name in ("cp.png", "cp-dir/00000.png", "cp-dir/00001.png"):
        split, one = Image.open(out / name), Image.open(tmp_path / name)
        assert split.text == one.text, name                  # the recipe: the split is not recorded
        levels = np.abs(np.asarray(split, dtype=int) - np.asarray(one, dtype=int))
        assert levels.max() <= 1 and (levels > 0).mean() < 0.01, (name, levels.max(), (levels > 0).mean())
    lines = [json.loads(x) for x in (out / "cp-dir" / "manifest.jsonl").read_text().splitlines()]
    assert [x["file"] for x in lines] == ["00000.png", "00001.png"] and {x["rank"] for x in lines} == {0}
    assert sorted(p.name for p in (out / "cp-dir").iterdir()) == ["00000.png", "00001.png", "manifest.jsonl"]


# -- refusals in one process -------------------------------------------------------------------------------------

FAST = """
import sys
from ralu_torch.cli import main
code = main(sys.argv[1:])
assert "torch" not in sys.modules and "diffusers" not in sys.modules, "imported before the flags were checked"
sys.exit(code)
"""


@pytest.mark.parametrize("pipeline, world, argv, msg", [
    ("FluxPipeline", 1, ["--context-parallel", "2"], "--context-parallel 2 makes each image on 2 processes and this "
                                                      "launch has 1: launch 2 processes (torchrun --nproc-per-node 2"),
    ("FluxPipeline", 6, ["--context-parallel", "2", "--cfg-parallel"], "launch a multiple of 4 processes"),
    ("FluxPipeline", 2, ["--context-parallel", "0"], "--context-parallel must be a positive number of processes"),
    ("FluxPipeline", 1, ["--ring"], "--ring is the attention of context parallelism"),
    ("FluxPipeline", 4, ["--context-parallel", "2"], "4 processes need many images"),
    ("StableDiffusion3Pipeline", 2, ["--context-parallel", "2"], "SD3 cannot run under context parallelism"),
    ("ChromaPipeline", 2, ["--context-parallel", "2"], "Chroma cannot run under context parallelism"),
    ("ZImagePipeline", 2, ["--cfg-parallel"], "Z-Image cannot split its guidance across ranks"),
])
def test_generate_refuses_a_split_it_cannot_make_before_torch_is_imported(tmp_path, pipeline, world, argv, msg):
    """The launch's size (WORLD_SIZE) and the model's family (its model_index.json) are checked
    in a fraction of a second, before torch imports and long before any weights load."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    r = subprocess.run([sys.executable, "-c", FAST, "generate", "--model", str(model), "--prompt", "a",
                        "--out", str(tmp_path / "x.png"), *argv], capture_output=True, text=True,
                       env={**os.environ, "WORLD_SIZE": str(world)})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and msg in r.stderr, r.stderr

@pytest.mark.parametrize("model, transformer", [("sd3-medium", "SD3Transformer2DModel"),
                                                ("z-image", "ZImageTransformer2DModel"),
                                                ("chroma", "ChromaTransformer2DModel")])
def test_a_family_without_a_context_parallel_plan_is_refused_by_name(model, transformer):
    """A transformer split by a plan of its user's own: RALU does not know where its positions go."""
    from ralu_torch import RALU

    pipe = tiny_pipeline(model)
    pipe.transformer._parallel_config = SimpleNamespace(context_parallel_config=object())
    with pytest.raises(ValueError, match=f"cannot run under context parallelism: its diffusers transformer "
                                         f"\\({transformer}\\) has no context-parallel plan"):
        RALU(pipe)


@pytest.mark.parametrize("model", ["sd3-medium", "z-image"])
def test_cfg_parallel_is_refused_where_guidance_is_one_batched_call(model):
    from ralu_torch import RALU
    from ralu_torch.parallel import enable

    pipe = tiny_pipeline(model)
    with pytest.raises(ValueError, match="cannot split its guidance across ranks: .*both halves in one call"):
        RALU(pipe, cfg_parallel=object())
    with pytest.raises(ValueError, match="cannot split its guidance across ranks"):
        enable(pipe, cfg_parallel=True)
    with pytest.raises(ValueError, match="cannot run under context parallelism"):
        enable(pipe, context_parallel=2)


def test_both_wan_experts_must_be_split():
    from ralu_torch import RALU

    pipe = tiny_pipeline("wan2.2-t2v-a14b")
    pipe.transformer._parallel_config = SimpleNamespace(context_parallel_config=SimpleNamespace(
        ring_degree=1, ulysses_degree=2))
    with pytest.raises(ValueError, match="enable the same context parallelism on each"):
        RALU(pipe)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(context_parallel=0), "context_parallel must be a positive whole number of ranks, got 0"),
    (dict(context_parallel=2.0), "context_parallel must be a positive whole number of ranks, got 2.0"),
    (dict(context_parallel=2), "need torch.distributed initialised"),
])
def test_enable_refuses_bad_input(kwargs, msg):
    from ralu_torch.parallel import enable

    with pytest.raises(ValueError, match=msg):
        enable(tiny_pipeline("flux-dev"), **kwargs)


def test_enable_with_one_rank_and_no_cfg_changes_nothing():
    from ralu_torch.parallel import Placement, enable

    pipe = tiny_pipeline("flux-dev")
    assert enable(pipe) == Placement() and pipe.transformer._parallel_config is None
