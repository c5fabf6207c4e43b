"""What splitting one generation over several GPUs costs in communication, and what it buys
(torch-free; docs/cost.md, docs/parallel.md).

Under diffusers' context parallelism (:mod:`ralu_torch.parallel`) each of ``N`` ranks holds
``1/N`` of a call's tokens. What crosses the links, per rank and per transformer call of one
image (bytes each rank *receives*; a rank sends as much):

- **Ulysses**, per split attention: an all-to-all of the queries, keys and values (a rank
  holds ``S/N`` tokens of all heads and keeps ``1/N`` of them: it receives ``(N-1)/N`` of
  ``S/N x width`` values for each of the three) and one of the output (``S x width/N``, of
  which it receives ``(N-1)/N``): ``4 (N-1) S width / N^2`` values;
- **ring** (diffusers' ring attention, its keys and values all-gathered and visited in turn):
  ``2 (N-1) S width / N`` values, ``N/2`` times Ulysses';
- at the end of the call, ``proj_out``'s all-gather of the output: ``(N-1)/N`` of the image
  tokens' output features.

``S`` is the sequence the split attention sees: image and text tokens in the joint attention
of FLUX.1, FLUX.2 and Qwen-Image; the clip's tokens in Wan's self-attention (its
cross-attention reads the whole text on every rank and moves nothing). ``width`` is heads x
head dim. The families without a context-parallel plan (SD3, Z-Image, Chroma) are refused.

**CFG parallelism** puts the two guidance branches on two groups of ranks: each group makes
one call a step, and the two velocities (float32, the image tokens' output features) are
all-gathered once a step.

The predicted time on ``N`` GPUs: each rank computes ``1/N`` of every transformer call (the
``full`` convention's FLOPs: attention products included, since each rank computes attention
for its share of the heads or of the queries) at ``gpu_tflops``, then waits for its bytes at
``link_gbps``, with no overlap of the two (diffusers' collectives block the attention that
needs them); text encoding and the VAE decodes run whole on every rank. The speed-up is the
time on one GPU over that; the FLOP ratio, the same with free communication.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ._errors import check_finite, check_positive_int
from .cost import Flux2Spec, QwenImageSpec, TransformerSpec, WanSpec, get_model, layout_cost
from .layout import Layout

MODES = ("ulysses", "ring")


def split_attention(spec, image_tokens: int, text_tokens: int) -> tuple:
    """``(layers, sequence, output features)`` of a transformer under its context-parallel plan:
    how many split attentions a call runs, over how many tokens, and the features per image
    token that ``proj_out`` gathers. ``ValueError`` for a transformer without a plan."""
    if isinstance(spec, TransformerSpec) and spec.family == "flux":
        return spec.double + spec.single, image_tokens + text_tokens, spec.token_features
    if isinstance(spec, Flux2Spec):
        return spec.double + spec.single, image_tokens + text_tokens, spec.token_features
    if isinstance(spec, QwenImageSpec):
        return spec.layers, image_tokens + text_tokens, spec.token_features
    if isinstance(spec, WanSpec):
        return spec.layers, image_tokens, 4 * (spec.out_channels or spec.in_channels)
    name = getattr(spec, "family", type(spec).__name__)
    raise ValueError(f"{name} has no context-parallel plan in diffusers (its transformer does not split its "
                     "sequence); context parallelism is priced for flux, flux2, qwen-image and wan")


def call_bytes(spec, image_tokens: int, text_tokens: int, ranks: int, mode: str = "ulysses",
               dtype_bytes: int = 2) -> float:
    """Bytes each of ``ranks`` ranks receives during one transformer call of one image
    (the module docstring's counts; activations of ``dtype_bytes`` bytes)."""
    n = check_positive_int("ranks", ranks)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    layers, seq, out = split_attention(spec, image_tokens, text_tokens)
    if n == 1:
        return 0.0
    width = spec.width
    per_attention = 4 * (n - 1) * seq * width / n ** 2 if mode == "ulysses" else 2 * (n - 1) * seq * width / n
    gather = (n - 1) / n * image_tokens * out
    return dtype_bytes * (layers * per_attention + gather)


@dataclass(frozen=True)
class StageTraffic:
    """One stage on the ranks: its image ``tokens``, the transformer ``calls`` each rank makes,
    the bytes each rank receives per call, the CFG all-gathers' bytes of the stage, and the
    transformer TFLOPs each rank computes (``full`` convention)."""

    tokens: int
    calls: int
    bytes_per_call: float
    cfg_bytes: float
    tflops_per_rank: float

    @property
    def bytes(self) -> float:
        return self.calls * self.bytes_per_call + self.cfg_bytes


@dataclass(frozen=True)
class ParallelCost:
    """A layout on ``ranks`` context-parallel ranks (``x 2`` with ``cfg_parallel``): per-stage
    traffic and the predicted time against one GPU (module docstring)."""

    model: str
    resolution: tuple
    ranks: int
    mode: str
    cfg_parallel: bool
    link_gbps: float
    gpu_tflops: float
    dtype_bytes: int
    stages: tuple
    transformer_tflops: float        # the layout's, on one GPU (full convention)
    replicated_tflops: float         # text encoding and decodes: whole on every rank
    frames: int = 1

    @property
    def gpus(self) -> int:
        return self.ranks * (2 if self.cfg_parallel else 1)

    @property
    def bytes(self) -> float:
        """Bytes each rank receives over the whole generation."""
        return sum(s.bytes for s in self.stages)

    def _seconds(self, tflops: float) -> float:
        return tflops / self.gpu_tflops

    @property
    def one_gpu_seconds(self) -> float:
        return self._seconds(self.transformer_tflops + self.replicated_tflops)

    @property
    def compute_seconds(self) -> float:
        return self._seconds(sum(s.tflops_per_rank for s in self.stages) + self.replicated_tflops)

    @property
    def link_seconds(self) -> float:
        return self.bytes * 8 / (self.link_gbps * 1e9)

    @property
    def seconds(self) -> float:
        return self.compute_seconds + self.link_seconds

    @property
    def flop_ratio(self) -> float:
        """One GPU's FLOPs over one rank's: the speed-up if the links were free."""
        return self.one_gpu_seconds / self.compute_seconds

    @property
    def speedup(self) -> float:
        """Predicted time on one GPU over the time on :attr:`gpus` GPUs at ``link_gbps``."""
        return self.one_gpu_seconds / self.seconds

    def to_dict(self) -> dict:
        return {"model": self.model, "resolution": list(self.resolution), "frames": self.frames,
                "ranks": self.ranks, "mode": self.mode, "cfg_parallel": self.cfg_parallel, "gpus": self.gpus,
                "link_gbps": self.link_gbps, "gpu_tflops": self.gpu_tflops, "dtype_bytes": self.dtype_bytes,
                "stages": [{"tokens": s.tokens, "calls": s.calls, "bytes_per_call": s.bytes_per_call,
                            "cfg_bytes": s.cfg_bytes, "bytes": s.bytes, "tflops_per_rank": s.tflops_per_rank}
                           for s in self.stages],
                "bytes": self.bytes, "one_gpu_seconds": self.one_gpu_seconds, "compute_seconds": self.compute_seconds,
                "link_seconds": self.link_seconds, "flop_ratio": self.flop_ratio, "speedup": self.speedup}


def parallel_cost(layout: Layout, model="flux-dev", resolution=None, *, ranks: int, link_gbps: float,
                  mode: str = "ulysses", cfg_parallel: bool = False, gpu_tflops: float = 400.0, dtype_bytes: int = 2,
                  solver: str = "euler", text_tokens: int | None = None, frames: int | None = None) -> ParallelCost:
    """``layout`` for one image (or clip) of ``model`` on ``ranks`` context-parallel ranks
    (``mode`` "ulysses" or "ring"), twice as many GPUs with ``cfg_parallel``, at ``link_gbps``
    gigabits per second per GPU and direction and ``gpu_tflops`` sustained TFLOP/s per GPU
    (an assumption to replace by a measurement of yours); ``dtype_bytes`` per activation value
    (2: bf16). The rest as :func:`ralu_schedule.cost.layout_cost` takes it."""
    n = check_positive_int("ranks", ranks)
    link = check_finite("link_gbps", link_gbps)
    rate = check_finite("gpu_tflops", gpu_tflops)
    if link <= 0 or rate <= 0:
        raise ValueError(f"link_gbps and gpu_tflops must be positive, got {link:g} and {rate:g}")
    size = check_positive_int("dtype_bytes", dtype_bytes)
    spec = get_model(model)
    if text_tokens is not None:
        spec = replace(spec, text_tokens=spec.text_tokens - spec.t5_tokens + check_positive_int("text tokens",
                                                                                               text_tokens),
                       t5_tokens=text_tokens)
    try:
        split = split_attention(spec.transformer, 1, 1)
    except ValueError:
        raise ValueError(f"{spec.name}'s transformer has no context-parallel plan in diffusers (it does not split its "
                         "sequence across GPUs); context parallelism is priced for the flux, flux2, qwen-image and "
                         "wan models") from None
    if spec.default_references:
        raise ValueError(f"{spec.name} sees reference images in every call, and the communication model counts the "
                         "generated and text tokens only: context parallelism is not priced for it")
    if cfg_parallel and spec.cfg_batches != 2:
        raise ValueError(f"{spec.name} makes one transformer call per step (no classifier-free guidance to split); "
                         "CFG parallelism needs a model that guides with two")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    c = layout_cost(layout, spec, resolution, convention="full", solver=solver, frames=frames)
    branches = 2 if cfg_parallel else 1
    stages = []
    for st in c.stages:
        calls = st.evaluations * spec.cfg_batches // branches
        cfg = st.evaluations * st.tokens * split[2] * 4 if cfg_parallel else 0.0   # float32 velocities, one a call
        stages.append(StageTraffic(tokens=st.tokens, calls=calls,
                                   bytes_per_call=call_bytes(spec.transformer, st.tokens, spec.text_tokens, n, mode,
                                                             size),
                                   cfg_bytes=float(cfg), tflops_per_rank=st.tflops / (n * branches)))
    replicated = c.text_encoding_tflops + sum(c.edge_decode_tflops) + c.decode_tflops
    return ParallelCost(model=spec.name, resolution=c.resolution, ranks=n, mode=mode, cfg_parallel=cfg_parallel,
                        link_gbps=link, gpu_tflops=rate, dtype_bytes=size, stages=tuple(stages),
                        transformer_tflops=c.transformer_tflops, replicated_tflops=replicated, frames=c.frames)


def format_parallel(p: ParallelCost) -> str:
    clip = f", {p.frames} frames" if p.frames > 1 else ""
    how = f"{p.ranks} ranks ({p.mode})" + (" x 2 guidance branches" if p.cfg_parallel else "")
    lines = [f"{p.model} at {p.resolution[0]}x{p.resolution[1]}{clip} on {p.gpus} GPUs: {how}, "
             f"{p.link_gbps:g} Gb/s links, {p.gpu_tflops:g} TFLOP/s per GPU, {p.dtype_bytes}-byte activations",
             f"{'stage':>5} {'tokens':>7} {'calls':>5} {'MB/call':>9} {'GB':>8} {'compute s':>10} {'link s':>8}"]
    for i, s in enumerate(p.stages, 1):
        lines.append(f"{i:>5} {s.tokens:>7} {s.calls:>5} {s.bytes_per_call / 1e6:>9.1f} {s.bytes / 1e9:>8.2f} "
                     f"{s.tflops_per_rank / p.gpu_tflops:>10.2f} {s.bytes * 8 / (p.link_gbps * 1e9):>8.2f}")
    lines += [f"received per rank   {p.bytes / 1e9:9.2f} GB",
              f"one GPU             {p.one_gpu_seconds:9.2f} s",
              f"{p.gpus} GPUs{'':<{14 - len(str(p.gpus))}}{p.seconds:9.2f} s "
              f"({p.compute_seconds:.2f} computing, {p.link_seconds:.2f} on the links)",
              f"FLOP ratio          {p.flop_ratio:9.2f}x",
              f"predicted speed-up  {p.speedup:9.2f}x"]
    return "\n".join(lines)
