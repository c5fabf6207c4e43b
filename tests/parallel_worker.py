"""One process of the multi-process checks of tests/test_parallel.py, launched twice by
``python -m torch.distributed.run --nproc-per-node 2 tests/parallel_worker.py OUT`` on the CPU
(gloo). Every case runs here in one launch, since each process start costs many seconds on a
small machine; each rank writes ``OUT/rank{r}.json``: per case, the largest difference from the
same run in one process (made in this process before the transformer is split) and whether
the two ranks' outputs agree bit for bit.

TEST-ONLY adaptations of the CPU, documented here and nowhere in the library:

- diffusers' ``enable_parallelism`` places rank ``r`` on device ``r % torch.accelerator.device_count()``,
  which is 0 on a machine without an accelerator: ``device_count`` answers 1 here;
- gloo's ``all_gather`` takes equal sizes only, and diffusers' uneven split (``ulysses_anything``)
  gathers unequal ones (NCCL takes them): here an ``all_gather`` of unequal tensors pads them to the
  largest, gathers, and cuts each back.

Nothing else is changed: the context-parallel hooks, the Ulysses all-to-alls and the gathers
are diffusers' and torch's own.
"""

import dataclasses
import json
import os
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))


def adapt_cpu() -> None:
    """The two test-only adaptations of the module docstring."""
    torch.accelerator.device_count = lambda: 1
    stock = dist.all_gather

    def all_gather(tensor_list, tensor, group=None, async_op=False):
        if all(t.shape == tensor.shape for t in tensor_list):
            return stock(tensor_list, tensor, group=group, async_op=async_op)
        n = max(t.numel() for t in tensor_list)
        flat = torch.zeros(n, dtype=tensor.dtype)
        flat[:tensor.numel()] = tensor.reshape(-1)
        parts = [torch.empty(n, dtype=tensor.dtype) for _ in tensor_list]
        stock(parts, flat, group=group)
        for out, part in zip(tensor_list, parts):
            out.copy_(part[:out.numel()].view_as(out))

    dist.all_gather = all_gather


#: The layouts every family runs: one stage, and three with a mixed stage (fraction 0.2 of 9
#: low-resolution tokens: 2 upsampled, 15 tokens, an odd count too).
ONE = dict(steps=(2,), ends=(1.0,))
THREE = dict(steps=(1, 1, 2), ends=(0.3, 0.6, 1.0), fractions=(0.2, 1.0))
#: (tiny model, extra call arguments): 96x96 is a 6x6 token grid, 3x3 = 9 tokens at low
#: resolution; Wan's 9 frames are 3 latent frames, 27 low-resolution tokens.
FAMILIES = {"flux": ("flux-dev", {}), "flux2": ("flux2-klein-base-4b", {}), "qwen-image": ("qwen-image", {}),
            "wan": ("wan2.1-t2v-14b", {"num_frames": 9}), "wan-2-experts": ("wan2.2-t2v-a14b", {"num_frames": 9})}
SIZE = 96


class Traced:
    """Counts, while active, the all-to-alls and all-gathers diffusers' context parallelism makes
    (torch's functional collectives, as diffusers calls them) and the bytes this rank receives
    in them: instrumentation only, the collectives run unchanged."""

    def __enter__(self):
        import torch.distributed._functional_collectives as funcol

        self.funcol, self.calls, self.bytes = funcol, 0, 0
        self.stock = funcol.all_to_all_single, funcol.all_gather_tensor
        a2a, gather = self.stock

        def all_to_all_single(x, output_split_sizes, input_split_sizes, group, *args, **kwargs):
            n, r = dist.get_world_size(group), dist.get_rank(group)
            rows = output_split_sizes or [x.shape[0] // n] * n
            self.calls += 1
            self.bytes += (sum(rows) - rows[r]) * x[0].numel() * x.element_size()
            return a2a(x, output_split_sizes, input_split_sizes, group, *args, **kwargs)

        def all_gather_tensor(x, gather_dim, group, *args, **kwargs):
            self.calls += 1
            self.bytes += (dist.get_world_size(group) - 1) * x.numel() * x.element_size()
            return gather(x, gather_dim, group, *args, **kwargs)

        funcol.all_to_all_single, funcol.all_gather_tensor = all_to_all_single, all_gather_tensor
        return self

    def __exit__(self, *exc):
        self.funcol.all_to_all_single, self.funcol.all_gather_tensor = self.stock


def run(ralu, inputs, extra, seed=0, size=None):
    out = ralu(height=size or SIZE, width=size or SIZE, generator=torch.Generator().manual_seed(seed),
               output_type="latent", **inputs, **extra)
    return out.images


def compare(name, got, ref, results, traced=None):
    """Largest difference from the one-process run, whether both ranks hold the same output, and
    how many collectives the split run made."""
    gathered = [torch.empty_like(got) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, got.contiguous())
    results[name] = {"diff": float((got - ref).abs().max()), "ranks_agree": all(torch.equal(g, got) for g in gathered),
                     "scale": float(ref.abs().max()), "collectives": None if traced is None else traced.calls,
                     "bytes": None if traced is None else traced.bytes}


def refused(name, results, call) -> None:
    """The message of the ValueError ``call()`` raises, and the collectives it made first."""
    with Traced() as traced:
        try:
            call()
            message = None
        except ValueError as err:
            message = str(err)
    results[name] = {"message": message, "collectives": traced.calls}


def traced_run(ralu, inputs, extra, **kwargs):
    with Traced() as traced:
        out = run(ralu, inputs, extra, **kwargs)
    return out, traced


def family_cases(results) -> None:
    from ralu_schedule import Layout
    from ralu_torch import RALU
    from ralu_torch.parallel import enable
    from ralu_torch.testing import tiny_inputs, tiny_pipeline

    for family, (model, extra) in FAMILIES.items():
        pipe = tiny_pipeline(model)
        ralus = {"1-stage": RALU(pipe, Layout(**ONE)), "3-stage": RALU(pipe, Layout(**THREE))}
        refs, inputs = {}, {b: tiny_inputs(pipe, b) for b in (1, 2)}
        for stages, ralu in ralus.items():
            for b in (1, 2):
                refs[stages, b] = run(ralu, inputs[b], extra)
        # the two guidance branches on the two ranks (no context parallelism): against one process
        guided = tiny_inputs(pipe, 2, guided=True)
        cfg_ref = run(ralus["3-stage"], guided, extra)
        cfg = enable(pipe, cfg_parallel=True)
        compare(f"{family} cfg-parallel", run(RALU(pipe, Layout(**THREE), cfg_parallel=cfg.cfg_group), guided, extra),
                cfg_ref, results)
        # context parallelism over both ranks (the uneven split: 9 and 15 tokens)
        enable(pipe, context_parallel=2)
        for (stages, b), ref in refs.items():
            out, traced = traced_run(ralus[stages], inputs[b], extra)
            compare(f"{family} {stages} batch {b}", out, ref, results, traced)


def reference_refusal(results) -> None:
    """FLUX.1 Kontext (reference tokens in every call) under context parallelism: refused before
    the transformer's first call (no all-to-all)."""
    from tiny import picture, reference_inputs, tiny_kontext

    from ralu_schedule import Layout
    from ralu_torch import RALU
    from ralu_torch.parallel import enable

    pipe = tiny_kontext()
    enable(pipe, context_parallel=2)
    inputs = {**reference_inputs(pipe, 1), "image": [picture(96, 96)], "_auto_resize": False, "max_area": SIZE * SIZE}
    refused("reference refusal", results, lambda: run(RALU(pipe, Layout(**THREE)), inputs, {}))


#: diffusers' default (equal) split, enabled as a user enables it: 128x128 with fraction 0.25 holds
#: 16, 28 and 64 tokens per image and 8 text tokens, all even.
EVEN = dict(steps=(1, 2, 2), ends=(0.3, 0.6, 1.0), fractions=(0.25, 1.0))


def equal_split_cases(results) -> None:
    from diffusers import ContextParallelConfig

    from ralu_schedule import Layout
    from ralu_torch import RALU
    from ralu_torch.testing import tiny_inputs, tiny_pipeline

    pipe = tiny_pipeline("flux-dev")
    ralu = RALU(pipe, Layout(**EVEN))
    inputs = tiny_inputs(pipe, 2)
    ref = run(ralu, inputs, {}, size=128)
    pipe.transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=2))
    refused("refusal", results, lambda: run(ralu, inputs, {}))   # 96x96: 9 tokens in the first stage
    out, traced = traced_run(ralu, inputs, {}, size=128)
    compare("flux equal split batch 2", out, ref, results, traced)
    refused("generator refusal", results, lambda: run(ralu, inputs, {}, size=128, seed=dist.get_rank()))
    out = ralu(height=128, width=128, output_type="latent", **inputs).images          # no generator: one seed for all
    compare("no generator", out, out, results)
    refused("cfg refusal", results, lambda: run(RALU(pipe, Layout(**EVEN), cfg_parallel=dist.group.WORLD), inputs, {},
                                                size=128))
    results["flux equal split batch 2"].update(
        stage_tokens=list(Layout(**EVEN).stage_tokens(8, 8)), calls=list(EVEN["steps"]), batch=2,
        text_tokens=inputs["prompt_embeds"].shape[1], dtype_bytes=4,
        spec=dataclasses.asdict(ralu.backend.cost_spec()))


def mesh_cases(results) -> None:
    """Context and CFG parallelism together on four ranks (a 2 x 2 mesh: two ranks per guidance
    branch), 96x96, batch 2, three stages, for FLUX.1 with true CFG and Wan 2.2 with two experts,
    against one process. Run by hand (``--mesh``, four processes); the test suite stays at two."""
    from ralu_schedule import Layout
    from ralu_torch import RALU
    from ralu_torch.parallel import enable
    from ralu_torch.testing import tiny_inputs, tiny_pipeline

    for family in ("flux", "wan-2-experts"):
        model, extra = FAMILIES[family]
        pipe = tiny_pipeline(model)
        guided = tiny_inputs(pipe, 2, guided=True)
        ref = run(RALU(pipe, Layout(**THREE)), guided, extra)
        placement = enable(pipe, context_parallel=2, cfg_parallel=True)
        out = run(RALU(pipe, Layout(**THREE), cfg_parallel=placement.cfg_group), guided, extra)
        compare(f"{family} context 2 x cfg 2 batch 2", out, ref, results)


#: ``ralu generate`` on the tiny saved FLUX.1 (96x96: 9 tokens in the first stage), one image, then two
#: into a directory: the tests run the same commands in one process and compare the files.
CLI = ["--prompt", "a red cat", "--height", "96", "--width", "96", "--max-sequence-length", "16", "--seed", "3"]


def cli_cases(results, model: str, out: Path) -> None:
    """``ralu generate --context-parallel 2`` (its console entry point, in this torchrun-launched
    process), with every file write and manifest line recorded by the process that makes it."""
    from ralu_torch.cli import main
    from ralu_torch.generation import write

    writes = []
    save, append = write.save, write.append_line
    write.save = lambda image, path, rec, audio=None: (writes.append(str(path)), save(image, path, rec, audio))[1]
    write.append_line = lambda path, line: (writes.append(str(path)), append(path, line))[1]
    common = ["generate", "--model", model, *CLI, "--context-parallel", "2"]
    codes = [main([*common, "--out", str(out / "cp.png")]),
             main([*common, "--num-images", "2", "--out-dir", str(out / "cp-dir")])]
    results["cli"] = {"codes": codes, "writes": writes}


def main(out: Path, model: str | None = None, mesh: bool = False) -> None:
    adapt_cpu()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results = {}
    try:
        if mesh:
            mesh_cases(results)
        else:
            family_cases(results)
            equal_split_cases(results)
            reference_refusal(results)
        if model is not None:
            cli_cases(results, model, out)
    except Exception:                       # reported per rank; the test prints it
        results["error"] = traceback.format_exc()
    (out / f"rank{rank}.json").write_text(json.dumps(results, indent=1))
    if mesh and rank == 0:
        for name, got in results.items():
            print(f"{name}: {got}" if name == "error" else
                  f"{name}: largest difference from one process {got['diff']:.2g} (of values up to "
                  f"{got['scale']:.2g}), all ranks the same: {got['ranks_agree']}")
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    given = [a for a in sys.argv[2:] if a != "--mesh"]       # OUT [MODEL] [--mesh]
    main(Path(sys.argv[1]), *given[:1], mesh="--mesh" in sys.argv[2:])
