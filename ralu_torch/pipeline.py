"""``RALU(pipe, schedule)``: RALU sampling from an existing diffusers pipeline."""

from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass, field

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput
from tqdm.auto import tqdm

from ralu_schedule import PRESETS, Layout, Plan, Schedule, get_preset, solve, token_grid
from ralu_schedule._errors import brief, check_finite, check_positive_int
from ralu_schedule.presets import PARAMETERS
from ralu_schedule.strength import check_strength

from .backends import backend_for
from .backends.families import BY_NAME, default_preset, read_pipeline_config
from .backends.img2img import ImageStart
from .caches import CallCounter, StageScope, cache_config, check_cache, check_cache_for_run, enable_cache
from .options import KEPT_NOISE, OUTPUT_TYPES
from .parallel import Parallel
from .sampler import sample
from .schedules import _check_family, _parse_schedule
from .selection import ConditionSelection, check_edge_thresholds, selection_policy
from .solvers import resolve_solver, stage_scheduler
from .tokens import check_mode, unpack

#: What a step callback can read besides the conditioning's own tensors (``cond.callback_tensors()``).
CALLBACK_INPUTS = ("latents", "stage")


@dataclass
class RALUPipelineOutput(BaseOutput):
    """``images`` as diffusers returns them (for a video pipeline the clips, also as ``frames``,
    the name WanPipeline's output gives them); ``stage_tokens``: tokens per image in each stage;
    ``transitions``: per-transition records (token sets, selections, decoded estimates) when
    the call asked for them with ``record_transitions=True``, else empty. ``stage_calls``: per
    stage, the transformer calls made and skipped and their TFLOPs. ``plan``: what the sampler
    ran (the schedule's plan; from an image with a fixed schedule, its cut). ``audio``: a joint
    pipeline's second output (LTX2Pipeline's waveforms, or its audio latents for
    ``output_type="latent"``), as that pipeline returns it; None for the others."""

    images: object
    stage_tokens: list = field(default_factory=list)
    transitions: list = field(default_factory=list)
    schedule: Schedule | None = None
    stage_calls: list = field(default_factory=list)
    interrupted: bool = False
    plan: Plan | None = None
    audio: object = None

    @property
    def frames(self):
        return self.images


class RALU:
    """Region-Adaptive Latent Upsampling around a diffusers pipeline.

    ``schedule``: a preset name (``"flux-dev-7x"``), a :class:`ralu_schedule.Schedule`, its
    JSON form (a dict or a file path), or a :class:`ralu_schedule.Layout` to be solved at
    call time; by default the preset of the pipeline's model (``flux-dev-7x`` for FLUX.1-dev,
    ``qwen-image-7x`` for Qwen-Image, ..., read from its configs: ``ralu_schedule.DEFAULT_PRESETS``). For presets, ``parameters="default"`` takes the published parameters where
    they exist (FLUX) and our solution otherwise (SD3), ``"authors"`` insists on the
    published ones, and ``"optimised"`` re-solves the preset's layout at call time. Solving
    at call time takes ``h0`` from the pipeline's scheduler config at the requested
    resolution (FLUX.1-dev's dynamic shift), never from a constant.

    ``upsample``: ``"latent"`` (nearest upsampling of the latent grid, the paper's
    description; default) or ``"token"`` (whole packed tokens repeated, the authors' code).
    ``kept_noise``: ``"exact"`` (variance ``1 - c`` for tokens not upsampled at a
    transition; default) or ``"unit"`` (the authors' variance 1).
    ``select``: which tokens a partial transition upsamples: ``"edges"`` (default),
    ``"authors"`` (the authors' OpenCV rule, for reproducing the paper), ``"random"``,
    ``"condition"`` (an image-conditioned pipeline: the condition image's edges, found before the
    first step, no decode at transitions), or a callable ``(estimate, tokens, fraction,
    generator) -> mask`` (:mod:`ralu_torch.selection`).
    ``noise_sampler``: a callable ``(shape, generator, device) -> tensor`` of standard
    normals for the sampler's noise (default: diffusers' ``randn_tensor`` with ``generator``).
    ``solver``: how each stage integrates: ``"scheduler"`` (default) uses the class of
    ``pipe.scheduler`` at call time, any diffusers flow-matching scheduler
    (``FlowMatchEulerDiscreteScheduler``, ``FlowMatchHeunDiscreteScheduler``, or
    ``DPMSolverMultistepScheduler``/``UniPCMultistepScheduler`` with ``use_flow_sigmas=True,
    prediction_type="flow_prediction"``); ``"euler"``; a scheduler instance; or a scheduler
    class, configured from the pipeline's. Each stage runs a fresh copy over exactly its own
    sigmas (:mod:`ralu_torch.solvers`); plain flow-matching Euler is the built-in step.
    ``cache``: a diffusers cache configuration (``FirstBlockCacheConfig``,
    ``TaylorSeerCacheConfig``, ``FasterCacheConfig``, ``PyramidAttentionBroadcastConfig``, ...)
    to enable on the transformer; a cache enabled beforehand with
    ``pipe.transformer.enable_cache(config)`` works the same. Cache state is reset at each
    stage (:mod:`ralu_torch.caches`); the output's ``stage_calls`` says what it skipped.
    ``allow_other_model``: run a preset made for another model family (an SD3 preset on FLUX,
    or the reverse); refused by default.

    Pipelines that start from an image (``FluxImg2ImgPipeline``, ``StableDiffusion3Img2ImgPipeline``,
    ``QwenImageImg2ImgPipeline``, ``ZImageImg2ImgPipeline``, ``ChromaImg2ImgPipeline``) or a clip
    (``WanVideoToVideoPipeline``) take their ``image=``/``video=`` and ``strength=`` (their own
    default when not given): a preset or a layout then runs all its steps from the strength point,
    solved for that range (:meth:`ralu_schedule.Layout.for_strength`); a fixed schedule (a
    :class:`ralu_schedule.Schedule`, its JSON) is cut where the pipeline cuts its own grid
    (:meth:`ralu_schedule.Schedule.cut`). The first stage starts from the encoded input at its
    resolution, noised to its first sigma (docs/conditioned.md).
    ``compile``: ``True`` or a dict of ``torch.compile`` options compiles the transformer's
    blocks in place (regional compilation; ``dynamic=True`` unless the dict says otherwise),
    once, here; the pipeline's own calls then use the compiled blocks too.

    Several GPUs on one image or clip (docs/parallel.md): a transformer with diffusers' context
    parallelism enabled (``transformer.enable_parallelism(config=ContextParallelConfig(...))``,
    on both experts of Wan 2.2) runs each stage split across its ranks, FLUX.1, FLUX.2,
    Qwen-Image and Wan; ``cfg_parallel``: a process group (or 1-D ``DeviceMesh``) of 2 ranks
    that run the two guidance branches, one each. :func:`ralu_torch.parallel.enable` sets both
    up; every rank calls RALU with the same arguments and the same generator seed.
    ``references``: for pipelines with reference images (``FluxKontextPipeline``,
    ``QwenImageEditPipeline``, ``QwenImageEditPlusPipeline``, ``Flux2Pipeline``/``Flux2KleinPipeline``
    with ``image=``): ``"full"`` (default) gives every stage the references at full resolution,
    as the stock pipeline does; ``"stage"`` reads them at each stage's resolution
    (:mod:`ralu_torch.backends.references`, docs/conditioned.md).
    """

    def __init__(self, pipe, schedule=None, *, parameters: str = "default", upsample: str = "latent",
                 kept_noise: str = "exact", select="edges", edge_thresholds=(0.1, 0.2), noise_sampler=None,
                 solver="scheduler", cache=None, compile=False, allow_other_model: bool = False, references=None,
                 cfg_parallel=None):
        self.pipe = pipe
        self.backend = backend_for(pipe)
        if references is not None:
            if not hasattr(self.backend, "set_references"):
                raise ValueError(f"references= is for pipelines that take reference images (FluxKontextPipeline, "
                                 f"QwenImageEditPipeline, QwenImageEditPlusPipeline, Flux2Pipeline, "
                                 f"Flux2KleinPipeline); {type(pipe).__name__} takes none")
            self.backend.set_references(references)
        self._parallel = Parallel(self.backend, BY_NAME[self.backend.name], cfg_parallel)
        if schedule is None:
            schedule = default_preset(BY_NAME[self.backend.name], read_pipeline_config(pipe))
        if parameters not in PARAMETERS:
            raise ValueError(f"parameters must be one of {', '.join(PARAMETERS)}, got {parameters!r}")
        if kept_noise not in KEPT_NOISE:
            raise ValueError(f"kept_noise must be one of {', '.join(KEPT_NOISE)}, got {kept_noise!r}")
        self.upsample = check_mode(upsample)
        self.kept_noise = kept_noise
        check_edge_thresholds(edge_thresholds)          # checked whichever policy is chosen
        self.select = selection_policy(select, self.backend.pixels_per_token, edge_thresholds)
        if isinstance(self.select, ConditionSelection) and not getattr(self.backend, "conditioned", False):
            raise ValueError(f"select='condition' takes its edges from the image a pipeline is conditioned on; "
                             f"{type(pipe).__name__} has none (use 'edges', the decoded estimate's)")
        if noise_sampler is not None and not callable(noise_sampler):
            raise ValueError(f"noise_sampler must be a callable (shape, generator, device) -> tensor, "
                             f"got {type(noise_sampler).__name__}")
        self.noise_sampler = noise_sampler
        self._solver = solver
        resolved = self.solver                          # checked here, resolved again at each call
        _check_family(schedule, self.backend.name, allow_other_model)
        self._fixed, self._layout = _parse_schedule(schedule, parameters)
        # a preset given by name is a layout to solve for a strength (a Schedule is cut instead)
        self._preset = schedule if isinstance(schedule, str) and schedule in PRESETS else None
        self._parameters = parameters
        transformer = self.backend.transformer
        experts = getattr(self.backend, "experts", [transformer])
        if len(experts) > 1 and (cache is not None or any(cache_config(m) is not None for m in experts)):
            raise ValueError(f"{type(pipe).__name__} has {len(experts)} experts (transformer and transformer_2); RALU "
                             "runs diffusers' caches on one transformer, so a cache here is refused rather than "
                             "left on one expert only")
        if cache is not None:
            enable_cache(transformer, cache)
        elif cache_config(transformer) is not None:
            check_cache(cache_config(transformer), transformer)
        self._guidance_scale = None
        self._num_timesteps = None
        self._current_timestep = None
        self._interrupt = False
        if self._fixed is not None and resolved is not None:    # a solver that cannot run a stage: refused now
            for k in range(self._fixed.layout.num_stages):
                stage_scheduler(resolved, self._fixed, k)
        if compile is not False and compile is not None:
            if compile is not True and not isinstance(compile, dict):
                raise ValueError(f"compile must be True, False or a dict of torch.compile options, got {compile!r}")
            self.backend.compile({} if compile is True else dict(compile))

    @property
    def solver(self):
        """The scheduler each stage copies, or ``None`` for the built-in Euler step."""
        return resolve_solver(self._solver, self.pipe.scheduler)

    # what diffusers' callbacks and cache callbacks read from a pipeline
    @property
    def num_timesteps(self) -> int | None:
        """Model calls of the current (or last) run, all stages together."""
        return self._num_timesteps

    @property
    def current_timestep(self):
        """The model call's timestep (``1000 sigma``) while a run is in progress, else None."""
        return self._current_timestep

    @property
    def interrupt(self) -> bool:
        """Set ``_interrupt = True`` (on this object or on the pipeline) from a callback to stop."""
        return self._interrupt

    @property
    def guidance_scale(self):
        return self._guidance_scale

    @property
    def layout(self) -> Layout:
        return self._fixed.layout if self._fixed is not None else self._layout

    def schedule_for(self, height: int, width: int, num_frames: int | None = None,
                     strength: float | None = None) -> Schedule | Plan:
        """The schedule used at ``height x width`` (and ``num_frames`` for a video pipeline;
        solved there if it is solved at call time). With ``strength`` (a pipeline that starts from
        an image): a preset or layout solved for the range the strength leaves, or the fixed
        schedule's :class:`~ralu_schedule.Plan` cut where the pipeline cuts its own grid."""
        if strength is not None:
            return self._strength_schedule(height, width, num_frames, strength)
        if self._fixed is not None:
            return self._fixed
        return _solve_cached(self._based(self._layout, height, width, num_frames))

    def _based(self, layout: Layout, height, width, num_frames) -> Layout:
        """``layout`` with the pipeline's own base shift (and terminal) at this size."""
        gh, gw = self._grid(height, width, num_frames)
        rule = self.backend.shift_rule()
        tokens = gh * gw * getattr(self.backend, "model_tokens_per_token", 1)   # the pipeline's count (LTX-2: 4 each)
        h0 = rule(tokens, layout.total_steps)       # the pipeline's own shift for this many steps
        return layout.with_base(h0, rule.terminal)

    def _strength_schedule(self, height, width, num_frames, strength):
        be = self.backend
        if not isinstance(be, ImageStart):
            raise ValueError(_no_strength(self.pipe))
        s = check_strength(strength)
        if self._fixed is not None and s == 1.0:        # from pure noise: the schedule itself
            return self._fixed
        if self._fixed is not None and self._preset is None:
            return self._fixed.cut(s, be.strength_rounding, type(self.pipe).__name__)
        if self._parameters == "authors":
            raise ValueError(f"preset {self._preset!r}'s published parameters are for a run from noise; from an image "
                             "(strength) its layout is solved for the range the strength leaves: use "
                             "parameters='default' or 'optimised'")
        layout = self._layout if self._layout is not None else get_preset(self._preset).layout
        return _solve_cached(self._based(layout, height, width, num_frames).for_strength(s))

    def _grid(self, height, width, num_frames=None) -> tuple:
        """Full-resolution tokens ``(rows, cols)``; a video's latent frames stacked along the rows."""
        rows, cols = token_grid(height, width, pixels_per_token=self.backend.pixels_per_token,
                                downsampling=self.layout.downsampling)
        return (self._frames(num_frames) * rows, cols)

    def _frames(self, num_frames) -> int:
        """Latent frames of a call (1 for an image pipeline, which takes no ``num_frames``)."""
        be = self.backend
        if not hasattr(be, "latent_frames"):
            if num_frames is not None:
                raise ValueError(f"num_frames is for video pipelines (WanPipeline); {type(self.pipe).__name__} makes "
                                 "images")
            return 1
        return be.latent_frames(be.default_num_frames if num_frames is None else num_frames)

    @torch.no_grad()
    def __call__(self, prompt=None, *, height: int | None = None, width: int | None = None,
                 guidance_scale: float | None = None, num_images_per_prompt: int = 1, generator=None,
                 max_sequence_length: int | None = None, output_type: str = "pil", return_dict: bool = True,
                 callback_on_step_end=None, callback_on_step_end_tensor_inputs=("latents",),
                 joint_attention_kwargs=None, record_transitions: bool = False, latents=None, num_frames=None,
                 **prompt_kwargs):
        """Generate images. ``prompt_kwargs`` are the pipeline's own prompt arguments:
        FLUX ``prompt_2``, ``prompt_embeds``, ``pooled_prompt_embeds``, and for true CFG
        ``negative_prompt(_2)`` or ``negative_(pooled_)prompt_embeds`` with ``true_cfg_scale``
        (as FluxPipeline: on when > 1; one more transformer call per step); SD3 also ``prompt_3``,
        ``negative_prompt(_2, _3)``, ``negative_prompt_embeds``, ``negative_pooled_prompt_embeds``,
        ``clip_skip``. ``guidance_scale`` and ``max_sequence_length`` default to the pipeline's.
        ``record_transitions=True`` returns what each transition did in ``transitions``
        (token sets, selection, decoded estimate); off by default, since the estimates would
        otherwise stay in memory for the whole run. ``latents``: the starting noise instead of
        drawing it, at the first stage's resolution: ``(B, 16, H/8/D, W/8/D)`` (``D`` the
        layout's ``downsampling``: 2 for the presets), or FLUX's packed form of it (a video
        pipeline's clip ``(B, C, T, h/D, w/D)``). ``num_frames``: a video pipeline's frame count
        (WanPipeline's rule: ``4 k + 1``, default 81); ``height`` and ``width`` default to the
        pipeline's own (WanPipeline: 480 x 832). Image-conditioned pipelines take their own
        condition arguments the same way: FluxFillPipeline ``image`` and ``mask_image``,
        FluxControlPipeline ``control_image``, WanImageToVideoPipeline ``image`` (and
        ``last_image`` for Wan 2.1's first-last-frame model), resized to ``height x width`` by the
        pipeline's own processors (docs/conditioned.md). A pipeline that starts from an
        image or a clip takes its ``image=`` (``video=``, whose frames set the clip's) and
        ``strength=`` (its own default when not given; docs/conditioned.md); ``latents=``
        is refused there."""
        pipe, be = self.pipe, self.backend
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        _check_generator(generator)
        generator = self._parallel.generator(generator, be.device)   # the same draws on every rank of a generation
        start = None
        if isinstance(be, ImageStart):     # strength and the input checked and preprocessed: no model call yet
            if latents is not None:
                raise ValueError(f"RALU does not take latents= with {type(pipe).__name__}: its run starts from the "
                                 f"{be.start_argument} noised at the first stage's resolution (noise_sampler= draws "
                                 "that noise), where the stock pipeline would take ready latents in its place")
            _check_generator(generator)
            prompt_kwargs, start = be.image_start(prompt_kwargs, height=height, width=width, generator=generator,
                                                  batch=check_positive_int("num_images_per_prompt", num_images_per_prompt)
                                                  * _prompt_count(prompt, prompt_kwargs), num_frames=num_frames)
            height, width, num_frames = start.height, start.width, start.num_frames
        elif prompt_kwargs.get("strength") is not None and "strength" not in inspect.signature(be.encode).parameters:
            raise ValueError(_no_strength(pipe))      # (FluxFillPipeline takes strength: its encode says which)
        if hasattr(be, "set_layout"):       # what encode checks reference images against, before any model runs
            be.set_layout(self.layout)
        if hasattr(be, "call_size"):        # a pipeline that sizes its output from its inputs (max_area, an image)
            height, width = be.call_size(prompt, height, width, prompt_kwargs)
        height = be.default_height if height is None else height   # only when not given: 0 is refused, not replaced
        width = be.default_width if width is None else width
        grid = self._grid(height, width, num_frames)
        if hasattr(be, "set_frames"):
            be.set_frames(self._frames(num_frames))
        _check_memory(be, grid, num_images_per_prompt * _prompt_count(prompt, prompt_kwargs))
        schedule = self.schedule_for(height, width, num_frames, None if start is None else start.strength)
        device = be.device
        steps_args = sorted(k for k in ("num_inference_steps", "sigmas", "timesteps") if k in prompt_kwargs)
        if steps_args:
            lay = schedule.layout if start is None else self.layout
            raise ValueError(f"RALU takes its steps from the schedule, not {', '.join(steps_args)} "
                             f"({'+'.join(map(str, lay.steps))} = {lay.total_steps} steps here); for other steps pass "
                             "another preset or a ralu_schedule.Layout, e.g. RALU(pipe, Layout(steps=(3, 4, 6), "
                             "ends=(0.2, 0.3, 1.0), fractions=(0.1, 1.0)))")
        for key, why in BY_NAME[be.name].extra_refused.items():
            if prompt_kwargs.get(key) is not None:
                raise ValueError(f"RALU does not take {key}= with {type(pipe).__name__}: {why}")
        prompt_kwargs, num_images_per_prompt = _check_prompt_inputs(prompt, prompt_kwargs, num_images_per_prompt,
                                                                    be.embedding_inputs, be.embedding_widths(),
                                                                    be.dtype, be.device)
        takes = inspect.signature(be.encode).parameters     # one the family does not take: refused below
        texts = [k for k in _texts(prompt, prompt_kwargs) if k in takes]
        if texts:
            be.require_text_encoder(" and ".join(texts))
        if guidance_scale is not None:
            check_finite("guidance_scale", guidance_scale)
        _check_generator(generator)
        # what an image-conditioned backend's encode also needs of the call (it names them): the output
        # size, the frame count, the generator and whether latents= replace the first noise
        call = {"height": height, "width": width, "generator": generator, "latents": latents,
                "num_frames": getattr(be, "default_num_frames", None) if num_frames is None else num_frames}
        takes = inspect.signature(be.encode).parameters
        try:
            cond = be.encode(prompt=prompt, num_images_per_prompt=num_images_per_prompt,
                             max_sequence_length=_max_sequence_length(be, max_sequence_length),
                             guidance_scale=be.default_guidance_scale if guidance_scale is None else guidance_scale,
                             joint_attention_kwargs=joint_attention_kwargs, device=device, **prompt_kwargs,
                             **{k: v for k, v in call.items() if k in takes})
        except TypeError as err:
            if "unexpected keyword argument" not in str(err):
                raise
            raise ValueError(f"RALU with {type(pipe).__name__} does not take {str(err).split('argument ')[-1]}") from None
        batch = cond.batch
        plan = schedule.plan if isinstance(schedule, Schedule) else schedule

        if cache_config(be.transformer) is not None:
            check_cache(cache_config(be.transformer), be.transformer)
            check_cache_for_run(cache_config(be.transformer), plan)
        self._parallel.prepare(cond, plan, grid, cache_config(be.transformer))
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        allowed = CALLBACK_INPUTS + tuple(cond.callback_tensors())
        unknown = set(callback_on_step_end_tensor_inputs) - set(allowed)
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs may name {', '.join(sorted(allowed))}, "
                             f"got {', '.join(sorted(unknown))}")
        self._guidance_scale = getattr(cond, "guidance_scale",
                                       be.default_guidance_scale if guidance_scale is None else guidance_scale)
        def on_step(step, stage, sigma, x):
            kwargs = {"latents": x, "stage": stage, **cond.callback_tensors()}
            out = callback_on_step_end(self, step, sigma * 1000, {k: kwargs[k] for k in
                                                                   callback_on_step_end_tensor_inputs}) or {}
            out = _check_callback_output(out, kwargs)
            cond.update(out)                                         # as diffusers' loops take embeddings back
            if hasattr(cond, "guidance_scale") and self._guidance_scale != cond.guidance_scale:
                cond.guidance_scale = self._guidance_scale           # e.g. a CFG cut-off callback
            return out.get("latents", x)

        callback = None if callback_on_step_end is None else on_step

        def progress(total, stage):  # one bar per stage, honouring pipe.set_progress_bar_config
            cfg = {"desc": f"RALU stage {stage + 1}/{plan.layout.num_stages}",
                   **getattr(pipe, "_progress_bar_config", {})}
            return tqdm(total=total, **cfg)

        select = self.select.bind(cond) if isinstance(self.select, ConditionSelection) else self.select
        select = self._parallel.selection(select)
        self._interrupt = pipe._interrupt = False
        counter = CallCounter(be.transformer, measure=cache_config(be.transformer) is not None)
        scope = StageScope(be.transformer, owner=self, pipe=pipe, counter=counter)
        try:
            with counter:
                image = None if start is None else be.encode_start(start, batch, generator, device)
                res = sample(be, plan, cond, batch=batch, grid=grid, generator=generator, upsample=self.upsample,
                             kept_noise=self.kept_noise, select=select, noise_sampler=self.noise_sampler,
                             solver=self.solver, callback=callback, progress=progress, record=record_transitions,
                             scope=scope, latents=be.first_noise(latents), start=image)
                del image
        finally:
            self._current_timestep = pipe._current_timestep = None
        for st in counter.stages:
            st.tflops = st.executed * batch * be.call_tflops(st.tokens, cond)
        side = getattr(cond, "side", None)               # a joint pipeline's second stream (LTX-2's audio)
        finite = torch.isfinite(res.latents).all()
        if side is not None:
            finite = finite & torch.isfinite(side.state).all()
        if not bool(finite):                                 # one host read per call: never a black image
            raise ValueError("the sampler produced non-finite latents (NaN or inf); check the model's dtype "
                             "(float16 overflows in FLUX) and the inputs")
        finish = getattr(be, "finish", None)              # a condition the pipeline writes into its result
        latents = (res.latents if finish is None else finish(res.latents, cond)).to(be.latents_dtype)  # the pipeline's own
        if output_type == "latent":
            images = be.pipeline_latents(latents, grid)   # the form the pipeline itself returns
        else:
            images = be.postprocess(be.decode(unpack(latents, grid)), output_type)
        audio = None if side is None else be.side_output(side, output_type)
        pipe.maybe_free_model_hooks()
        if not return_dict:
            return (images,) if side is None else (images, audio)
        return RALUPipelineOutput(images=images, stage_tokens=res.stage_tokens, transitions=res.transitions,
                                  schedule=schedule if isinstance(schedule, Schedule) else self._fixed,
                                  stage_calls=counter.stages, interrupted=res.interrupted, plan=plan, audio=audio)


def _check_prompt_inputs(prompt, kwargs: dict, num_images_per_prompt, spec, widths=None, dtype=None, device=None):
    """Prompt or embeddings, consistently batched, of the transformer's widths, cast to its
    dtype and device (floating ones; masks keep theirs); embeddings repeated
    ``num_images_per_prompt`` times here (diffusers' ``encode_prompt`` repeats only what it
    encodes itself).

    ``spec`` (a backend's :class:`~ralu_torch.backends.base.EmbeddingInputs`) names the
    embedding arguments the pipeline takes, their form (a tensor of a number of dimensions,
    or a list of 2-D tensors, one per image), which need which, and the masks' embeddings."""
    n = check_positive_int("num_images_per_prompt", num_images_per_prompt)
    given = {k: kwargs[k] for k in spec.forms if kwargs.get(k) is not None}
    for name in _texts(prompt, kwargs):      # the stock pipelines' rule: text or its embeddings, not both
        embeds = "negative_prompt_embeds" if name.startswith("negative") else "prompt_embeds"
        if embeds in given:
            raise ValueError(f"give {name} or {embeds}, not both")
    if not given:
        if prompt is None:
            raise ValueError(f"give a prompt (a string or a list of them) or {spec.describe()}")
        return kwargs, n
    for k, v in given.items():
        spec.check(k, v, (widths or {}).get(k))
    spec.check_masks(given)
    if dtype is not None:
        cast = lambda t: t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)  # noqa: E731
        given = {k: [cast(t) for t in v] if isinstance(v, (list, tuple)) else cast(v) for k, v in given.items()}
        kwargs = {**kwargs, **given}
    for k, needs in spec.requires.items():
        missing = [m for m in needs if k in given and m not in given]
        if missing:
            what = "attention mask" if all(m in spec.masks for m in missing) else "embeddings"
            raise ValueError(f"{k} need {' and '.join(missing)} (the {what} of the same prompts)")
    batches = {k: len(v) for k, v in given.items()}
    if len(set(batches.values())) > 1:
        raise ValueError("prompt embeddings must share one batch size, got "
                         + ", ".join(f"{k} {b}" for k, b in batches.items()))
    if n > 1:
        kwargs = {**kwargs, **{k: spec.repeat(v, n) for k, v in given.items()}}
    return kwargs, 1


#: The pipelines' text arguments: each refused together with its embeddings, each encoded by text encoders.
TEXT_ARGUMENTS = ("prompt", "prompt_2", "prompt_3", "negative_prompt", "negative_prompt_2", "negative_prompt_3")


def _texts(prompt, kwargs) -> dict:
    """The text arguments of a call that are given, by name."""
    values = {"prompt": prompt, **{k: kwargs.get(k) for k in TEXT_ARGUMENTS[1:]}}
    return {k: v for k, v in values.items() if v is not None}


def _max_sequence_length(backend, value) -> int:
    """The call's ``max_sequence_length``: the pipeline's default, or a positive integer up to
    the pipeline's own limit (FluxPipeline, StableDiffusion3Pipeline and ChromaPipeline: 512;
    QwenImagePipeline: 1024)."""
    if value is None:
        return backend.default_max_sequence_length
    value = check_positive_int("max_sequence_length", value)
    limit = backend.max_sequence_length_limit
    if limit is not None and value > limit:
        raise ValueError(f"max_sequence_length cannot be greater than {limit} for {type(backend.pipe).__name__} "
                         f"(its text encoder's limit), got {value}")
    return value


def _check_callback_output(out, current: dict) -> dict:
    """What a step callback returned: a dict whose tensors have the shape and device of those
    they replace (``latents``, the conditioning's), cast to their dtype; a ``ValueError`` naming
    the key, what was expected and what came, otherwise."""
    if not isinstance(out, dict):
        raise ValueError(f"callback_on_step_end must return a dict (or None), got {type(out).__name__}")
    checked = {}
    for key, value in out.items():
        if key == "stage":
            continue
        if key not in current:
            raise ValueError(f"callback_on_step_end returned {key!r}; it may return "
                             f"{', '.join(k for k in current if k != 'stage')}")
        old = current[key]
        pairs = list(zip(value, old)) if isinstance(old, list) and isinstance(value, (list, tuple)) else [(value, old)]
        if isinstance(old, list) and (not isinstance(value, (list, tuple)) or len(value) != len(old)):
            raise ValueError(f"callback_on_step_end's {key!r} must be a list of {len(old)} tensors, got "
                             f"{type(value).__name__}")
        for new, was in pairs:
            if not isinstance(new, torch.Tensor) or not new.is_floating_point():
                raise ValueError(f"callback_on_step_end's {key!r} must be a floating-point tensor, got "
                                 f"{type(new).__name__} {getattr(new, 'dtype', '')}")
            # latents keep their shape; embeddings their width (SD3's CFG cut-off drops the unconditional half)
            keep = tuple(was.shape) if key == "latents" else tuple(was.shape[-1:])
            if (tuple(new.shape) if key == "latents" else tuple(new.shape[-1:])) != keep:
                raise ValueError(f"callback_on_step_end's {key!r} must keep its {'shape' if key == 'latents' else 'width'} "
                                 f"{keep if key == 'latents' else keep[0]}, got {tuple(new.shape)}")
            if new.device != was.device:
                raise ValueError(f"callback_on_step_end's {key!r} must stay on {was.device}, got {new.device}")
        cast = lambda new, was: new.to(was.dtype)  # noqa: E731
        checked[key] = [cast(n, w) for n, w in pairs] if isinstance(old, list) else cast(value, old)
    return checked


def _no_strength(pipe) -> str:
    """Why a pipeline that generates from noise takes no ``strength``, naming the one that starts from an image."""
    from .backends.families import FAMILIES, family_of_pipeline

    name = type(pipe).__name__
    family = next((f for c in type(pipe).__mro__ for f in [family_of_pipeline(c.__name__)] if f is not None), None)
    starts = [f"{p} to start from a{'' if c.start == 'video' else 'n'} {c.start}"
              for f in FAMILIES if f is family for p, c in f.conditioned.items() if c.start]
    hint = f"; load {' or '.join(starts)}" if starts else ""
    return f"strength is for pipelines that start from an image or a video; {name} generates from noise{hint}"


def _prompt_count(prompt, kwargs) -> int:
    if isinstance(kwargs.get("prompt_embeds"), (torch.Tensor, list)):
        return len(kwargs["prompt_embeds"])
    return len(prompt) if isinstance(prompt, list) else 1


def _check_memory(backend, grid, batch) -> None:
    """Refuse an image whose float32 latents alone cannot fit, before allocating anything.
    The sampler holds about four latent-sized tensors at once (state, velocity, noise, the
    re-injection's temporaries); the estimate counts four and compares with free memory."""
    need = 4 * 4 * batch * grid[0] * grid[1] * backend.features
    device = backend.device
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return
    if need > free:
        frames = getattr(backend, "frames", 1)          # a video backend stacks its latent frames on the rows
        size = f"{grid[0] // frames * backend.pixels_per_token}x{grid[1] * backend.pixels_per_token} pixels"
        what = (f"{batch} clip(s) of {frames} latent frames at {size}" if backend.output_form == "video"
                else f"{size} x {batch} image(s)")
        raise ValueError(f"{what} need about {need / 2**30:.1f} GiB for the sampler's latents alone; "
                         f"{free / 2**30:.1f} GiB are free on {device}")


def _check_generator(generator) -> None:
    gens = generator if isinstance(generator, list) else [generator]
    if generator is not None and not all(isinstance(g, torch.Generator) for g in gens):
        raise ValueError(f"generator must be a torch.Generator, a list of them (one per image) or None, "
                         f"got {brief(generator)}")


@functools.lru_cache(maxsize=64)
def _solve_cached(layout: Layout) -> Schedule:
    return solve(layout, info={"solved": "at call time"})
