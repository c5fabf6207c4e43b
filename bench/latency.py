"""Wall time of RALU against the stock pipeline on random-weight models, side by side.

    python bench/latency.py --model proxy --device cpu     # CPU proxy: a mid-size FLUX (defaults below)
    python bench/latency.py --model full --device cuda     # FLUX.1-dev's architecture, bf16, on a GPU
    python bench/latency.py --model tiny                   # a one-block FLUX on the CPU (the tests run this)
    python bench/latency.py --family qwen-image            # another family's mid-size proxy (or --model tiny)

``--family`` (flux2, flux2-klein, qwen-image, z-image, chroma, wan, hunyuanvideo1.5, qwen-image-2.1, ltx2)
times that family's pipeline against RALU with its presets on a mid-size random model of its architecture, or with
``--model full`` on its published architecture (random weights, built on the device: FLUX.2
[dev] needs about 64 GiB in bfloat16); the FLOP ratio is then the transformer's alone, the
cost model's family spec for that model. ``--taylorseer`` adds one stacked configuration (the
first preset with diffusers' TaylorSeer); ``--compile`` compiles the transformer's blocks
first, so that every run, stock and RALU, uses them (warm-ups pay the compiling).

For each image size and batch size, in one process on one device: FluxPipeline at
``--baseline-steps`` steps and at the steps with RALU's FLOPs, and RALU with the 7x and 4x
presets. After one warm-up each, the runs are timed ``--repeats`` times in interleaved rounds
(:func:`ralu_schedule.timing.interleaved`: load that comes and goes falls on every run alike)
and each is reported by its minimum and median. Next to each wall-time speed-up (a ratio of
minima) stand its noise (both runs' spreads, ``(max - min) / min`` of their repeats) and the
cost model's FLOP ratio for the very architecture being timed (paper convention: weight
layers); ``wall / FLOP`` is marked ``*`` where the two depart by more than the noise explains
and ``?`` where one repeat leaves the noise unknown. ``--time-limit`` stops starting rounds
and sizes when it runs out and says what was cut. The per-image gain is how much faster per
image a batch runs than the first batch size.
The breakdown splits RALU's time into the transformer, edge decodes, edge detection,
noise, token bookkeeping and the rest (Euler updates, final decode), from timers around
those functions (synchronising CUDA at each).

Images are noise (random weights and prompt embeddings); the work per step is the model's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import torch

import ralu_torch.sampler as sampler
import ralu_torch.tokens as tokens_module
from diffusers.hooks import TaylorSeerCacheConfig

from ralu_schedule import Layout, preset
from ralu_schedule.caching import TaylorSeerPolicy
from ralu_schedule.cost import CausalVAEDecoderSpec, HunyuanVideo15VAEDecoderSpec, ModelSpec, VAEDecoderSpec, layout_cost
from ralu_schedule.models import MODEL_INFO
from ralu_schedule.timing import LEGEND, agreement, format_noise, interleaved, ratio_noise
from ralu_torch import RALU
from ralu_torch.backends import backend_for
from ralu_torch.caches import enable_cache
from ralu_torch.testing import FLUX_VAE, FULL_TRANSFORMERS, flux_pipeline, prompt_embeds, tiny_inputs, tiny_pipeline

PROXY = dict(num_layers=2, num_single_layers=4, attention_head_dim=64, num_attention_heads=4,
             joint_attention_dim=512, pooled_projection_dim=768, axes_dims_rope=(8, 28, 28))
PARTS = ("transformer", "edge decode", "edge detection", "noise", "token bookkeeping")

#: --family: the tiny model it scales up, the proxy's transformer configuration, the presets timed
FAMILY_PROXIES = {
    "flux2": ("flux2-dev", dict(in_channels=128, num_layers=2, num_single_layers=4, attention_head_dim=64,
                                num_attention_heads=4, joint_attention_dim=512, timestep_guidance_channels=256,
                                axes_dims_rope=(16, 16, 16, 16)), ["flux2-dev-7x", "flux2-dev-4x"]),
    "flux2-klein": ("flux2-klein-4b", dict(in_channels=128, num_layers=2, num_single_layers=4, attention_head_dim=64,
                                           num_attention_heads=4, joint_attention_dim=512,
                                           timestep_guidance_channels=256, axes_dims_rope=(16, 16, 16, 16)),
                    ["flux2-klein-4b-fast"]),
    "qwen-image": ("qwen-image", dict(num_layers=6, attention_head_dim=64, num_attention_heads=4,
                                      joint_attention_dim=512, axes_dims_rope=(16, 24, 24)),
                   ["qwen-image-7x", "qwen-image-4x"]),
    "z-image": ("z-image", dict(dim=256, n_layers=6, n_refiner_layers=2, n_heads=4, n_kv_heads=4, cap_feat_dim=512,
                                axes_dims=[16, 24, 24], axes_lens=[1536, 512, 512]), ["z-image-7x", "z-image-4x"]),
    "chroma": ("chroma", dict(num_layers=2, num_single_layers=4, attention_head_dim=64, num_attention_heads=4,
                              joint_attention_dim=512, axes_dims_rope=(8, 28, 28), approximator_hidden_dim=256,
                              approximator_layers=2), ["chroma-7x", "chroma-4x"]),
    "wan": ("wan2.1-t2v-14b", dict(num_layers=4, attention_head_dim=64, num_attention_heads=4, ffn_dim=1024,
                                   text_dim=512, freq_dim=256), ["wan-480p-7x", "wan-480p-4x"]),
    "hunyuanvideo1.5": ("hunyuanvideo1.5-480p", dict(num_layers=4, attention_head_dim=64, num_attention_heads=4,
                                                     num_refiner_layers=1, mlp_ratio=4.0, text_embed_dim=512,
                                                     text_embed_2_dim=256, image_embed_dim=256,
                                                     rope_axes_dim=(16, 24, 24)),
                        ["hunyuanvideo1.5-480p-7x", "hunyuanvideo1.5-480p-4x"]),
    "qwen-image-2.1": ("qwen-image-2.1", dict(num_layers=6, attention_head_dim=64, num_attention_heads=4,
                                              context_in_dim=512, mlp_ratio=3, axes_dims_rope=(16, 24, 24)),
                       ["qwen-image-2.1-7x", "qwen-image-2.1-4x"]),
    "ltx2": ("ltx-2", dict(num_layers=4, attention_head_dim=64, num_attention_heads=4, cross_attention_dim=256,
                           audio_attention_head_dim=32, audio_num_attention_heads=4, audio_cross_attention_dim=128),
             ["ltx2-512x768-7x", "ltx2-512x768-4x"]),
}
#: video families: the clip's frames unless --frames says otherwise
VIDEO_FRAMES = {"wan": 17, "hunyuanvideo1.5": 17, "ltx2": 9}


class Timers:
    """Wall time spent in named parts, with CUDA synchronised around each timed call."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.total = dict.fromkeys(PARTS, 0.0)

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    @contextmanager
    def part(self, name):
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.total[name] += time.perf_counter() - t0

    def wrap(self, owner, attr, name):
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            with self.part(name):
                return original(*args, **kwargs)
        setattr(owner, attr, timed)

    def reset(self):
        self.total = dict.fromkeys(PARTS, 0.0)


# diffusers' TaylorSeer in lite mode (whole blocks predicted); the cost model counts predicted calls free
TAYLORSEER_CONFIG = dict(cache_interval=3, disable_cache_before_step=2, use_lite_mode=True)
TAYLORSEER = TaylorSeerPolicy(interval=3, warmup=2)


def model_spec(pipe, text_tokens: int, cfg_batches: int = 1) -> ModelSpec:
    """The cost model's view of the pipeline being timed (no text encoders: embeddings are given;
    ``cfg_batches`` transformer calls per step)."""
    tf = backend_for(pipe).cost_spec()
    v = pipe.vae.config
    vae = VAEDecoderSpec(latent_channels=v.latent_channels, channels=tuple(v.block_out_channels),
                         layers_per_block=v.layers_per_block, post_quant_conv=v.use_post_quant_conv)
    return ModelSpec(name="benchmarked FLUX", transformer=tf, encoders=(), vae=vae, text_tokens=text_tokens,
                     t5_tokens=text_tokens, cfg_batches=cfg_batches)


def family_spec(pipe, text_tokens: int, cfg_batches: int = 1, inputs: dict | None = None) -> ModelSpec:
    """The cost model's view of a newer family's pipeline: its transformer's spec for the calls
    ``inputs`` (the run's prompt embeddings) make, no encoders or VAE (a video pipeline: a VAE of
    its own, small, architecture)."""
    be = backend_for(pipe)
    transformer = be.cost_spec()
    from ralu_torch.backends.base import DiffusersBackend

    # what the calls see, for a backend whose calls depend on its conditioning (HunyuanVideo 1.5: ByT5
    # and image tokens; Qwen-Image 2.1: the stored prefix); the others' spec is their transformer's
    if inputs is not None and type(be).call_spec is not DiffusersBackend.call_spec:
        kwargs = {k: v for k, v in inputs.items() if k not in ("guidance_scale",)}
        scale = inputs.get("guidance_scale", be.default_guidance_scale)
        cond = be.encode(prompt=None, num_images_per_prompt=1, max_sequence_length=be.default_max_sequence_length,
                         guidance_scale=scale, joint_attention_kwargs=None, device=be.device, **kwargs)
        transformer, text_tokens = be.call_spec(cond)
    temporal = getattr(be, "temporal", 1)
    v = pipe.vae.config
    if hasattr(be, "vae_spec"):                      # a family that describes its own VAE (LTX-2)
        vae = be.vae_spec()
    elif temporal == 1:
        vae = VAEDecoderSpec(channels=(0,))
    elif type(pipe.vae).__name__ == "AutoencoderKLHunyuanVideo15":
        vae = HunyuanVideo15VAEDecoderSpec(latent_channels=v.latent_channels,
                                           channels=tuple(reversed(v.block_out_channels)),
                                           layers_per_block=v.layers_per_block)
    else:                                            # the pipeline's own (small) causal VAE
        vae = CausalVAEDecoderSpec(base_dim=v.base_dim, z_dim=v.z_dim, dim_mult=tuple(v.dim_mult),
                                   num_res_blocks=v.num_res_blocks,
                                   temporal_upsample=tuple(reversed(v.temperal_downsample)))
    return ModelSpec(name=f"benchmarked {type(pipe).__name__}", transformer=transformer, encoders=(), vae=vae,
                     text_tokens=text_tokens, t5_tokens=text_tokens, temporal=temporal, cfg_batches=cfg_batches)


def build_family(family: str, model: str, device: str, dtype):
    """The family's tiny pipeline, its transformer replaced by a mid-size one (``--model proxy``)
    or by the published full-size architecture with its VAE (``--model full``, random weights
    built on the device in ``dtype``)."""
    tiny_model, config, _ = FAMILY_PROXIES[family]
    pipe = tiny_pipeline(tiny_model, device=device, dtype=dtype)
    if model == "tiny":
        return pipe, 8
    torch.manual_seed(0)
    cls = type(pipe.transformer)
    if model == "full":
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)               # no float32 copy of a model of tens of GB
        try:
            with torch.device(device):
                pipe.transformer = cls(**FULL_TRANSFORMERS[tiny_model])
                vae_cls = type(pipe.vae)
                pipe.vae = vae_cls(**FLUX_VAE) if vae_cls.__name__ == "AutoencoderKL" else vae_cls()
        finally:
            torch.set_default_dtype(previous)
        return rebuilt(pipe), 512
    base = {k: v for k, v in pipe.transformer.config.items() if not k.startswith("_")}
    with torch.device(device):
        pipe.transformer = cls(**{**base, **config}).to(dtype)
    if family.startswith("flux2"):                   # a 32-channel VAE for the 128-feature tokens
        from diffusers import AutoencoderKLFlux2

        with torch.device(device):
            pipe.vae = AutoencoderKLFlux2(block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=32,
                                          norm_num_groups=4).to(dtype)
    return rebuilt(pipe), 64


def rebuilt(pipe):
    """The pipeline made anew from its components, so that what its ``__init__`` reads from its
    transformer and VAE (HunyuanVideo 1.5's vision_states_dim from image_embed_dim, its
    vision_num_semantic_tokens, 729 as published; scale factors) follows the replaced models
    rather than the tiny ones (the proxy HunyuanVideo 1.5 ran its image embedder on the tiny
    model's width)."""
    return type(pipe)(**pipe.components)


def build(model: str, device: str, dtype):
    if model == "tiny":
        return flux_pipeline(tiny=True, device=device, dtype=dtype), 8
    if model == "full":
        return flux_pipeline(tiny=False, device=device, dtype=dtype), 512
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from ralu_torch.testing import FLUX_DEV_SCHEDULER, TINY_VAE

    torch.manual_seed(0)
    with torch.device(device):
        tf = FluxTransformer2DModel(patch_size=1, in_channels=64, guidance_embeds=True, **PROXY).to(dtype)
        # a VAE as light next to this transformer as FLUX.1-dev's is next to its own (an edge
        # decode costs a few percent of a step), so the proxy's non-transformer share is FLUX's
        vae = AutoencoderKL(**TINY_VAE).to(dtype)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER), vae=vae, text_encoder=None,
                        tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=tf)
    return pipe, 64


def table_rows(size: int, batch: int, results: list, per_image: dict, first_batch: int) -> list[str]:
    """The table's rows for one size and batch: ``results`` holds ``(label, Timing, FLOP ratio)``,
    the stock baseline first. Speed-ups divide minima; their noise is both runs' spreads
    (:func:`ralu_schedule.timing.ratio_noise`), and ``wall / FLOP`` is marked where the wall
    speed-up departs from the FLOP ratio by more than that noise explains. ``per_image``
    collects each run's seconds per image by batch, for the per-image gain."""
    base = results[0][1]
    lines = []
    for label, timing, ratio in results:
        per_image.setdefault(label, {})[batch] = timing.best / batch
        gain = ""
        if batch != first_batch and first_batch in per_image[label]:
            gain = f"{per_image[label][first_batch] / (timing.best / batch):.2f}x"
        speed = base.best / timing.best
        noise = ratio_noise(base, timing) if timing is not base else base.spread
        mark = agreement(speed, ratio, noise) if timing is not base else ""
        lines.append(f"| {size} | {batch} | {label} | {timing.best:.3f} | {timing.median:.3f} | {speed:.2f}x | "
                     f"{format_noise(noise)} | {ratio:.2f}x | {speed / ratio:.2f}{' ' + mark if mark else ''} | {gain} |")
    return lines


def noise_summary(timings: list) -> str:
    """One line on the machine's noise: the median and largest spread of the runs' repeats."""
    spreads = [t.spread for t in timings if t.spread is not None]
    if not spreads:
        return "noise: unknown (one repeat per run; --repeats 3 measures it)"
    return (f"noise (spread of a run's repeats, (max - min) / min): median {format_noise(statistics.median(spreads))}, "
            f"largest {format_noise(max(spreads))}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("tiny", "proxy", "full"), default="proxy")
    ap.add_argument("--family", choices=("flux", *FAMILY_PROXIES), default="flux",
                    help="the pipeline family to time (--model full: its published architecture, random weights)")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                    help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed repeats of each run, interleaved with the other runs' (default 3); the minimum "
                         "is reported, the spread is the noise")
    ap.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                    help="start no new round, size or batch after this many seconds (the first round of the "
                         "first size and batch always runs); what was cut is said")
    ap.add_argument("--baseline-steps", type=int, default=None,
                    help="the stock run's steps (default: 50 for FLUX.1, else the family model's stock count)")
    ap.add_argument("--presets", nargs="+", default=None,
                    help="default: flux-dev-7x flux-dev-4x, or the family's presets")
    ap.add_argument("--stacked", action="store_true",
                    help="add RALU + TaylorSeer (diffusers, lite mode, interval 3, warm-up 2), flux-dev-10x, and a "
                         "4-step baseline next to flux-schnell-16x")
    ap.add_argument("--frames", type=int, default=None,
                    help="video families: the clip's frames, (VAE's temporal factor) k + 1 (default: 17 for wan, "
                         "9 for ltx2)")
    ap.add_argument("--guided", action="store_true",
                    help="with the family's guidance on (a negative prompt: FLUX.1's and Qwen-Image's true CFG, CFG "
                         "elsewhere), as most runs of the guided models are: two transformer calls per step, the "
                         "stock pipeline's and RALU's alike")
    ap.add_argument("--taylorseer", action="store_true",
                    help="add one stacked configuration: the first preset with diffusers' TaylorSeer (as --stacked)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the transformer's blocks first (regional, dynamic shapes): every run, the "
                         "stock pipeline's and RALU's, then uses the compiled blocks; warm-ups pay the compiling")
    args = ap.parse_args(argv)
    frames = args.frames or VIDEO_FRAMES.get(args.family)
    if frames is not None and args.family not in VIDEO_FRAMES:
        ap.error(f"--frames is for video families ({', '.join(VIDEO_FRAMES)}); {args.family} makes images")
    clip = {} if frames is None else {"num_frames": frames}
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = torch.device(device).type == "cuda"
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    torch.set_grad_enabled(False)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()          # the stock pipelines' notes on unused guidance settings
    flux = args.family == "flux"
    if args.baseline_steps is None:
        args.baseline_steps = 50 if flux else MODEL_INFO[FAMILY_PROXIES[args.family][0]].default_steps
    if flux:
        pipe, text_tokens = build(args.model, device, dtype)
        spec = model_spec(pipe, text_tokens, 2 if args.guided else 1)
        presets = args.presets or ["flux-dev-7x", "flux-dev-4x"]
        stock_name = "FluxPipeline"
        inputs = lambda batch: (tiny_inputs(pipe, batch, text_tokens=text_tokens, guided=True) if args.guided  # noqa: E731
                                else prompt_embeds(pipe, batch=batch, text_tokens=text_tokens))
    else:
        pipe, text_tokens = build_family(args.family, args.model, device, dtype)
        presets = args.presets or FAMILY_PROXIES[args.family][2]
        stock_name = type(pipe).__name__
        inputs = lambda batch: tiny_inputs(pipe, batch, text_tokens=text_tokens, guided=args.guided)  # noqa: E731
        spec = family_spec(pipe, text_tokens, 2 if args.guided else 1, inputs(1))
    if args.guided and "negative_prompt_embeds" not in inputs(1):
        ap.error(f"--guided: {stock_name} as built here takes no negative prompt (its guidance is distilled)")
    pipe.set_progress_bar_config(disable=True)
    if args.compile:
        backend_for(pipe).compile({})
    backend_cls = type(backend_for(pipe))
    timers = Timers(cuda)
    # the transformer's part: the backend's velocity, every call of the sampler's model (Wan's
    # runs the experts' blocks itself, so a hook on pipe.transformer would miss it)
    # output_type="latent" below: the backend's decode runs only for edge detection
    for owner, attr, name in [(backend_cls, "velocity", "transformer"), (backend_cls, "decode", "edge decode"),
                              (sampler, "reinjection_noise", "noise"), (sampler, "draw", "noise"),
                              (tokens_module.TokenSet, "upsample", "token bookkeeping"),
                              (sampler, "upsample_values", "token bookkeeping"),
                              (backend_cls, "prepare", "token bookkeeping")]:
        timers.wrap(owner, attr, name)

    device_name = torch.cuda.get_device_name() if cuda else "CPU"
    kind = "FLUX" if flux else stock_name
    print(f"device: {device_name}{' (compiled blocks)' if args.compile else ''}; model: {args.model} {kind} ({sum(p.numel() for p in pipe.transformer.parameters()) / 1e6:.1f}M "
          f"transformer parameters), {str(dtype).replace('torch.', '')}, {text_tokens} text tokens"
          + ("" if flux else "; FLOP ratio: the transformer's")
          + ("" if frames is None else f"; clips of {frames} frames")
          + ("" if not args.guided else "; guided (LTX2Pipeline's guidance: up to three calls per step)"
             if args.family == "ltx2" else "; guided (two calls per step)") + "\n")
    deadline = None if args.time_limit is None else time.perf_counter() + args.time_limit
    print(f"each run: the minimum of {args.repeats} repeat(s) after one warm-up, the runs of a size and batch "
          "timed in interleaved rounds; speed-ups divide minima, their noise is both runs' spreads\n")
    print(f"| size | batch | run | min s | median s | speed-up | noise | FLOP ratio | wall / FLOP | "
          f"per-image gain vs batch {args.batches[0]} |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    breakdown, timed, cut = [], [], []
    for size in args.sizes:
        per_image = {}
        for batch in args.batches:
            if timed and deadline is not None and time.perf_counter() > deadline:     # the first is always timed
                cut.append(f"{size}x{size} at batch {batch}: not measured (--time-limit {args.time_limit:g} s reached)")
                continue
            emb = inputs(batch)
            gens = lambda: [torch.Generator(device).manual_seed(i) for i in range(batch)]  # noqa: E731
            ralu_cost = {name: layout_cost(preset(name).layout, spec, (size, size), frames=frames, baseline_steps=args.baseline_steps)
                         for name in presets}
            step_tflops = layout_cost(Layout(steps=(1,), ends=(1.0,)), spec, (size, size), frames=frames).transformer_tflops
            runs = [(f"{stock_name} {args.baseline_steps} steps", args.baseline_steps, None)]
            for name, c in ralu_cost.items():
                n_eq = max(1, round(c.transformer_tflops / step_tflops))
                runs.append((f"{stock_name} {n_eq} steps (= {name} FLOPs)", n_eq, None))
                runs.append((f"RALU {name}", None, name))
            if args.stacked and flux:
                runs += [("RALU flux-dev-10x", None, "flux-dev-10x"),
                         ("FluxPipeline 4 steps (schnell's budget)", 4, None),
                         ("RALU flux-schnell-16x", None, "flux-schnell-16x")]
                runs += [(f"RALU {name} + TaylorSeer", None, (name, TAYLORSEER)) for name in presets]
            elif args.taylorseer:
                runs += [(f"RALU {presets[0]} + TaylorSeer", None, (presets[0], TAYLORSEER))]
            # the FLOP ratio beside each wall-time speed-up: FLUX's whole pipeline (the cost model's
            # speed-up), a family's transformer alone (its spec has no encoders)
            base_tf = layout_cost(Layout(steps=(args.baseline_steps,), ends=(1.0,)), spec, (size, size),
                                  frames=frames).transformer_tflops
            ratio_of = lambda flops: flops.speedup if flux else base_tf / flops.transformer_tflops  # noqa: E731
            calls, warmups, ratios, cached = [], {}, {}, set()
            for label, steps, name in runs:
                if isinstance(name, tuple):              # stacked: RALU with a diffusers cache, on only while it runs
                    name, policy = name
                    cached.add(label)
                    flops = layout_cost(preset(name).layout, spec, (size, size), frames=frames,
                                        baseline_steps=args.baseline_steps, cache=policy)
                elif name is None:
                    flops = layout_cost(Layout(steps=(steps,), ends=(1.0,)), spec, (size, size), frames=frames,
                                        baseline_steps=args.baseline_steps)
                else:
                    flops = ralu_cost[name] if name in ralu_cost else layout_cost(
                        preset(name).layout, spec, (size, size), frames=frames, baseline_steps=args.baseline_steps)
                if name is None:
                    call = lambda steps=steps: pipe(**emb, height=size, width=size, **clip, num_inference_steps=steps,  # noqa: E731
                                                    generator=gens(), output_type="latent")
                    warmups[label] = lambda: pipe(**emb, height=size, width=size, **clip, num_inference_steps=2,  # noqa: E731
                                                  generator=gens(), output_type="latent")
                else:
                    ralu = RALU(pipe, name)
                    timers.wrap(ralu, "select", "edge detection")
                    call = lambda ralu=ralu: ralu(**emb, height=size, width=size, **clip, generator=gens(),  # noqa: E731
                                                  output_type="latent")
                calls.append((label, call))
                ratios[label] = ratio_of(flops)
            snapshots = {label: [] for label, _ in calls}

            def before(label):
                timers.reset()
                if label in cached:
                    enable_cache(pipe.transformer, TaylorSeerCacheConfig(**TAYLORSEER_CONFIG))

            def after(label, seconds):
                if label in cached:
                    pipe.transformer.disable_cache()
                snapshots[label].append((seconds, dict(timers.total)))

            for label, call in calls:                    # one warm-up each (a stock run: two steps, same shapes)
                before(label)
                warmups.get(label, call)()
                after(label, 0.0)
                snapshots[label].clear()
            sync = torch.cuda.synchronize if cuda else (lambda: None)
            timings = interleaved(calls, args.repeats, sync=sync, before=before, after=after, deadline=deadline)
            rounds = min(t.repeats for t in timings.values())
            if rounds < args.repeats:
                cut.append(f"{size}x{size} at batch {batch}: {rounds} of {args.repeats} repeats "
                           f"(--time-limit {args.time_limit:g} s reached)")
            results = [(label, timings[label], ratios[label]) for label, _ in calls]
            print("\n".join(table_rows(size, batch, results, per_image, args.batches[0])), flush=True)
            timed += list(timings.values())
            for label, timing, _ in results:
                if label.startswith("RALU"):
                    breakdown.append((size, batch, label, timing.best, min(snapshots[label], key=lambda x: x[0])[1]))
    print(f"\n{LEGEND}")
    print(noise_summary(timed))
    for line in cut:
        print(f"time limit: {line}")
    print("\nRALU's time by part (share of the minimum run; the rest: Euler updates, Python):\n")
    print("| size | batch | run | " + " | ".join(PARTS) + " | rest |")
    print("|---|---|---|" + "---|" * (len(PARTS) + 1))
    for size, batch, label, best, parts in breakdown:
        shares = [parts[p] / best for p in PARTS]
        print(f"| {size} | {batch} | {label} | " + " | ".join(f"{100 * s:.1f}%" for s in shares)
              + f" | {100 * (1 - sum(shares)):.1f}% |")
    return timed


if __name__ == "__main__":
    main()
