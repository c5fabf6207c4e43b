"""One image or clip on several GPUs: RALU under diffusers' context parallelism, and the two
guidance branches on two ranks (docs/parallel.md).

**Context parallelism** is diffusers' own (``ContextParallelConfig``,
``transformer.enable_parallelism``): the transformer's ``_cp_plan`` splits its token sequences
across ranks at the model's entry (FLUX.1, FLUX.2: ``hidden_states``, ``encoder_hidden_states``
and their ids; Qwen-Image: both streams at the first block, the rotary tables as the rotary
module returns them; Wan: the image tokens at the first block, the rotary tables), attention
runs as Ulysses (all-to-alls of queries, keys, values and outputs) or ring (keys and values
passed round), and ``proj_out`` gathers the output, so every rank holds the whole velocity.
RALU calls the stock modules, so those hooks split its tokens, whatever the stage. What RALU
hands the model besides (the per-image rotary tables of a mixed stage, ``ralu_rotary``;
Wan's tables and per-token timesteps, which :func:`~ralu_torch.backends.wan.forward_tokens`
passes to the blocks itself) is split here by :func:`local` with the same rule, so each
token's position travels with it to its rank.

Token counts. diffusers' default split cuts a sequence into equal parts and asserts that it
can; RALU's stages hold other counts than the stock run (a 96x96 FLUX image has 9 tokens in
its first stage, and a mixed stage ``L + 3k``). A count the degree does not divide runs under
the configuration's uneven split (``ulysses_anything=True`` or ``ring_anything=True``: ranks
take counts that differ by at most one token, diffusers' ``tensor_split``), which is exact:
nothing is padded and nothing masked. Padding with masked tokens is not: Qwen-Image's and
Wan's stock attention processors take no mask over image tokens, and the flash kernels and
ring attention take none at all. Without the uneven split RALU refuses such a run before
any model call, naming the stage and its count (:meth:`Parallel.prepare`).

**CFG parallelism**: where a family guides with separate transformer calls (FLUX.1's true
CFG, FLUX.2 [klein] base, Qwen-Image, Chroma, Wan; :class:`~ralu_torch.backends.base.Guided`),
the conditional branch runs on one rank of a two-rank group and the unconditional one on the
other; the two velocities are all-gathered and combined on both, in the order one process
combines them, so the result is the same. With context parallelism each branch runs on its
own context-parallel group: a 2-D mesh (:func:`enable`).

**Same draws everywhere**: every rank of a generation runs the whole sampler (noise, the
transitions, the selection) on the whole token set; only the transformer's work is split.
The random draws are made from the same generator state on every rank, so they agree
without communication: :meth:`Parallel.generator` checks that the ranks' generators hold the
same state (and refuses otherwise, before any model call), or, without a generator, gives
every rank one seeded from rank 0. The state stays identical because every rank receives
the same gathered velocity and applies the same elementwise updates. The selection at a
partial transition decodes and scores the estimate on every rank (so a policy that draws
from the generator advances it everywhere), then rank 0's mask is broadcast: a decode that
differs in its last bit between two GPUs cannot give two ranks different token sets.
"""

from __future__ import annotations

import dataclasses
import random

import torch
import torch.distributed as dist

from .backends.families import no_cfg_parallel, no_context_parallel

#: Caches whose decision to skip reads the data: under context parallelism each rank would
#: decide from its own tokens, and ranks that skip different blocks stop meeting in the
#: attention's collectives.
DATA_DEPENDENT_CACHES = ("FirstBlockCacheConfig", "SeaCacheConfig")


def context_config(model):
    """The ``ContextParallelConfig`` enabled on ``model`` (``enable_parallelism``), or None."""
    config = getattr(model, "_parallel_config", None)
    return None if config is None else config.context_parallel_config


def degree(cp) -> int:
    """Ranks a context-parallel configuration splits a sequence over (1 for None)."""
    return 1 if cp is None else cp.ring_degree * cp.ulysses_degree


def uneven(cp) -> bool:
    """Whether ``cp`` splits counts its degree does not divide (diffusers' ``*_anything``)."""
    return bool(cp.ulysses_anything or cp.ring_anything)


def local(x, dim: int, model):
    """This rank's share of ``x`` along ``dim``, split as ``model``'s context-parallel hooks
    split its sequences (``x`` itself without context parallelism)."""
    cp = context_config(model)
    if cp is None or x is None:
        return x
    from diffusers.hooks.context_parallel import EquipartitionSharder, PartitionAnythingSharder

    if uneven(cp):
        return PartitionAnythingSharder.shard_anything(x, dim, cp._flattened_mesh)
    return EquipartitionSharder.shard(x, dim, cp._flattened_mesh)


def local_joint(table: torch.Tensor, text_tokens: int, model, dim: int = 1) -> torch.Tensor:
    """A table over the joint sequence (``text_tokens`` text tokens, then the image's) as a rank
    sees it: each stream split on its own (the plan splits ``encoder_hidden_states`` and
    ``hidden_states`` separately), then joined in the attention's order, text first."""
    if context_config(model) is None:
        return table
    text, image = table.split([text_tokens, table.shape[dim] - text_tokens], dim=dim)
    return torch.cat([local(text, dim, model), local(image, dim, model)], dim=dim)


def splits_text(model) -> bool:
    """Whether ``model``'s context-parallel plan splits the text sequence too (FLUX.1, FLUX.2,
    Qwen-Image: joint attention) or only the image tokens (Wan: cross-attention to the text)."""
    plan = type(model)._cp_plan or {}
    return any(isinstance(v, dict) and "encoder_hidden_states" in v for v in plan.values())


def _group(value, what: str):
    """A process group from ``value`` (a ``ProcessGroup`` or a one-dimensional ``DeviceMesh``)."""
    from torch.distributed.device_mesh import DeviceMesh

    if isinstance(value, DeviceMesh):
        if value.ndim != 1:
            raise ValueError(f"{what} must be a one-dimensional DeviceMesh (e.g. mesh['cfg']), got {value.ndim} "
                             "dimensions")
        return value.get_group()
    if isinstance(value, dist.ProcessGroup):
        return value
    raise ValueError(f"{what} must be a torch.distributed ProcessGroup or a one-dimensional DeviceMesh of 2 ranks, "
                     f"got {type(value).__name__}")


def _device(group, fallback: torch.device) -> torch.device:
    """Where a collective of ``group`` takes its tensors: the CPU for gloo, else ``fallback``."""
    return torch.device("cpu") if str(dist.get_backend(group)) == "gloo" else fallback


def _broadcast(t: torch.Tensor, groups, device) -> torch.Tensor:
    """``t`` as the first rank of each group in turn holds it (so as rank 0 of the generation holds it)."""
    for g in groups:
        buf = t.to(_device(g, device), copy=True).contiguous()
        dist.broadcast(buf, group=g, group_src=0)
        t = buf.to(t.device)
    return t


class CfgSplit:
    """The guidance branches of a :class:`~ralu_torch.backends.base.Guided` call, one per rank of
    a two-rank ``group``: this rank runs its own and all-gathers both, in branch order."""

    def __init__(self, group):
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)

    def run(self, branches: list, one) -> list:
        """``one(name, branch)`` for this rank's branch; every branch's output, in order."""
        if len(branches) != self.size:
            raise ValueError(f"CFG parallelism runs {self.size} guidance branches on {self.size} ranks; this call "
                             f"has {len(branches)}")
        mine = one(*branches[self.rank]).contiguous()
        device = _device(self.group, mine.device)
        outs = [torch.empty_like(mine, device=device) for _ in range(self.size)]
        dist.all_gather(outs, mine.to(device), group=self.group)
        return [o.to(mine.device) for o in outs]


class AgreedSelection:
    """A selection policy whose mask is rank 0's on every rank (module docstring)."""

    def __init__(self, policy, groups):
        self.policy = policy
        self.groups = groups

    @property
    def needs_estimate(self) -> bool:
        return getattr(self.policy, "needs_estimate", True)

    def __call__(self, estimate, tokens, fraction, generator=None):
        mask = self.policy(estimate, tokens, fraction, generator)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            return mask                       # checked (and refused) by the sampler, alike on every rank
        return _broadcast(mask.to(torch.uint8), self.groups, mask.device).bool()


class Parallel:
    """What a RALU call does when its ranks share one generation: context parallelism read from
    the backend's transformer(s) at each call (it may be enabled after ``RALU`` is made), CFG
    parallelism from ``cfg_parallel`` (a process group or 1-D device mesh of 2 ranks, or None).
    Inactive (every method a no-op) without either."""

    def __init__(self, backend, family, cfg_parallel=None):
        self.backend, self.family = backend, family
        if cfg_parallel is not None and not family.cfg_parallel:
            raise ValueError(no_cfg_parallel(family))
        self.cfg = None if cfg_parallel is None else _group(cfg_parallel, "cfg_parallel")
        if self.cfg is not None:
            if dist.get_world_size(self.cfg) != 2:
                raise ValueError(f"cfg_parallel must be a group of 2 ranks (one per guidance branch), got "
                                 f"{dist.get_world_size(self.cfg)}")
        self.cp, self.groups = None, []
        self.begin()

    def begin(self) -> "Parallel":
        """Read the transformers' context parallelism (the start of each call) and check it."""
        experts = getattr(self.backend, "experts", [self.backend.transformer])
        configs = [context_config(m) for m in experts]
        self.model, self.cp = experts[0], configs[0]
        if any(c is not None for c in configs):
            if not self.family.context_parallel:
                raise ValueError(no_context_parallel(self.family, type(self.model).__name__))
            if any(c is None for c in configs) or len({(c.ring_degree, c.ulysses_degree) for c in configs}) > 1:
                raise ValueError(f"{type(self.backend.pipe).__name__} has {len(experts)} experts; enable the same "
                                 "context parallelism on each (transformer and transformer_2), or RALU would run one "
                                 "of them unsplit on every rank")
        self.groups = ([] if self.cp is None else [self.cp._flattened_mesh.get_group()]) + (
            [] if self.cfg is None else [self.cfg])
        return self

    @property
    def active(self) -> bool:
        return bool(self.groups)

    def generator(self, generator, device):
        """The generator(s) of a call, the same on every rank: checked when given (refused if the
        ranks' states differ), one seeded from rank 0 when not."""
        if not self.begin().active:
            return generator
        if generator is None:
            seed = _broadcast(torch.tensor([random.SystemRandom().randrange(2 ** 62)]), self.groups, device)
            return torch.Generator(device).manual_seed(int(seed))
        gens = generator if isinstance(generator, list) else [generator]
        state = torch.cat([g.get_state().view(torch.uint8).flatten() for g in gens])
        ours = torch.tensor([state.numel()], dtype=torch.int64)
        differs = torch.zeros(1, dtype=torch.int64)
        if not torch.equal(_broadcast(ours, self.groups, device).cpu(), ours):
            differs += 1
        else:
            differs += int(not torch.equal(_broadcast(state, self.groups, device).cpu(), state))
        for g in self.groups:                               # every rank learns whether any differs
            buf = differs.to(_device(g, device))
            dist.all_reduce(buf, op=dist.ReduceOp.MAX, group=g)
            differs = buf.cpu()
        if int(differs):
            raise ValueError("the ranks of one generation must pass generators in the same state (the same seed on "
                             "every rank): RALU draws its noise and selection on every rank; got different ones")
        return generator

    def prepare(self, cond, plan, grid, cache=None) -> None:
        """Before any model call: refuse what cannot be split (a stage's or a prompt's token count
        the degree does not divide, without the uneven split; a data-dependent cache), and
        hand ``cond`` its branches' ranks under CFG parallelism."""
        if self.cp is not None:
            if cache is not None and type(cache).__name__ in DATA_DEPENDENT_CACHES:
                raise ValueError(f"{type(cache).__name__} decides from the data whether to skip blocks; under context "
                                 "parallelism each rank would decide from its own tokens and the ranks would stop "
                                 "meeting in the attention's collectives. Use TaylorSeerCacheConfig, FasterCacheConfig "
                                 "or PyramidAttentionBroadcastConfig (fixed patterns) or no cache")
            if getattr(cond, "references", None) is not None:
                raise ValueError("reference images (FLUX.1 Kontext, Qwen-Image-Edit, FLUX.2 with image=) under context "
                                 "parallelism are not supported: their tokens' split has not been checked against one "
                                 "process. Run such a call without context parallelism")
            self._check_counts(cond, plan, grid)
        if self.cfg is not None:
            from .backends.base import Guided

            calls = getattr(cond, "calls", 1) if isinstance(cond, Guided) else 1
            if calls != 2:
                raise ValueError("CFG parallelism runs the two guidance branches on two ranks; this call makes one "
                                 "transformer call per step (guidance is off: give a negative prompt with "
                                 "true_cfg_scale > 1, or guidance_scale > 1, as the family guides)")
            cond.split = CfgSplit(self.cfg)

    def _check_counts(self, cond, plan, grid) -> None:
        n = degree(self.cp)
        if uneven(self.cp):
            return
        counts = [("stage", k + 1, c) for k, c in enumerate(plan.layout.stage_tokens(*grid))]
        if splits_text(self.model):
            counts += [("prompt", name, b.prompt_embeds.shape[1]) for name, b in cond.branches()]
        bad = next(((kind, which, c) for kind, which, c in counts if c % n), None)
        if bad is not None:
            kind, which, c = bad
            where = f"stage {which} holds {c} tokens per image" if kind == "stage" else (
                f"the {'' if which == 'cond' else 'negative '}prompt has {c} tokens")
            mode = "ring" if self.cp.ring_degree > 1 else "ulysses"
            fix = (f"ContextParallelConfig({mode}_degree={n}, {mode}_anything=True): diffusers' uneven split, which "
                   "gives ranks counts that differ by one" if self.cp.ring_degree == 1 or self.cp.ulysses_degree == 1
                   else "Ulysses or ring alone with its uneven split (ulysses_anything / ring_anything)")
            raise ValueError(f"{where}, which {n} ranks cannot split equally (diffusers' default context-parallel "
                             f"split asserts equal parts); enable {fix}")

    def selection(self, policy):
        """``policy`` with rank 0's mask on every rank."""
        return AgreedSelection(policy, self.groups) if self.active else policy


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where this process stands among the ranks (:func:`enable`): ``replica`` (which of the
    ``replicas`` independent generations it serves: data parallelism across replicas),
    ``mesh`` (this replica's ``("cfg", "ring", "ulysses")`` device mesh, or None when the
    process works alone), ``cfg_group`` (the group to pass as ``RALU(..., cfg_parallel=)``,
    or None), ``writes`` (whether this process is its replica's first rank, the one that
    writes files)."""

    replica: int = 0
    replicas: int = 1
    mesh: object = None
    cfg_group: object = None
    writes: bool = True


def enable(pipe, *, context_parallel: int = 1, cfg_parallel: bool = False, ring: bool = False,
           uneven_split: bool = True) -> Placement:
    """Split each generation over ``context_parallel x (2 if cfg_parallel)`` ranks of the
    initialised default process group (``torchrun`` or ``accelerate launch``), on every
    transformer of ``pipe`` (both Wan 2.2 experts): a device mesh ``("replica", "cfg", "ring",
    "ulysses")`` whose replicas are independent generations (the world size must be a multiple
    of the ranks a generation takes), diffusers' context parallelism enabled on each expert
    with ``ContextParallelConfig(ulysses_degree=N)`` (or ``ring_degree=N`` with ``ring``) over
    that mesh, and the uneven split on (``uneven_split``, the default: any image size runs;
    off, RALU refuses a stage count the degree does not divide). Neighbouring ranks share a
    context-parallel group (place a group within a node: its all-to-alls are every layer's),
    and the two CFG branches sit ``context_parallel`` ranks apart (one all-gather a step).

    Returns this process's :class:`Placement`; pass ``cfg_group`` to ``RALU(pipe,
    cfg_parallel=...)``. ``context_parallel=1`` without ``cfg_parallel`` enables nothing."""
    from .backends import backend_for
    from .backends.families import BY_NAME

    n = context_parallel
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"context_parallel must be a positive whole number of ranks, got {n!r}")
    if n == 1 and not cfg_parallel:
        return Placement()
    backend = backend_for(pipe)
    family = BY_NAME[backend.name]
    if n > 1 and not family.context_parallel:
        raise ValueError(no_context_parallel(family, type(backend.transformer).__name__))
    if cfg_parallel and not family.cfg_parallel:
        raise ValueError(no_cfg_parallel(family))
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("context and CFG parallelism need torch.distributed initialised: launch with torchrun or "
                         "accelerate launch and call torch.distributed.init_process_group() first")
    world = dist.get_world_size()
    cfg = 2 if cfg_parallel else 1
    if world % (n * cfg):
        raise ValueError(f"{world} processes cannot be split into generations of {n * cfg} ranks (context "
                         f"parallelism {n}{' x 2 guidance branches' if cfg_parallel else ''}); launch a multiple "
                         f"of {n * cfg}")
    experts = getattr(backend, "experts", [backend.transformer])
    if n > 1:
        _check_backend(experts[0], ring)
    from torch.distributed.device_mesh import init_device_mesh

    device_type = backend.transformer.device.type
    ring_degree, ulysses_degree = (n, 1) if ring else (1, n)
    mesh = init_device_mesh(device_type, (world // (n * cfg), cfg, ring_degree, ulysses_degree),
                            mesh_dim_names=("replica", "cfg", "ring", "ulysses"))
    if n > 1:
        from diffusers import ContextParallelConfig

        if torch.accelerator.device_count() == 0:
            raise ValueError("diffusers' context parallelism places each rank on an accelerator (rank modulo the "
                             "device count) and this machine has none")
        uneven_kw = {("ring_anything" if ring else "ulysses_anything"): True} if uneven_split else {}
        for m in experts:
            m.enable_parallelism(config=ContextParallelConfig(ring_degree=ring_degree, ulysses_degree=ulysses_degree,
                                                              mesh=mesh, **uneven_kw))
    replica = mesh.get_coordinate()[0]
    first = mesh["cfg", "ring", "ulysses"]
    return Placement(replica=replica, replicas=world // (n * cfg), mesh=first,
                  cfg_group=mesh["cfg"].get_group() if cfg_parallel else None,
                  writes=all(c == 0 for c in mesh.get_coordinate()[1:]))


def _check_backend(model, ring: bool) -> None:
    """Ring attention needs an attention backend that returns the log-sum-exp (not ``native``)."""
    if not ring:
        return
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    proc = next((m.processor for m in model.modules() if hasattr(getattr(m, "processor", None),
                                                                  "_attention_backend")), None)
    name = getattr(proc, "_attention_backend", None) or _AttentionBackendRegistry.get_active_backend()[0]
    name = getattr(name, "value", name)
    if name == "native":
        raise ValueError("ring attention merges partial attentions by their log-sum-exp, which diffusers' 'native' "
                         "attention backend does not return; set one that does (e.g. "
                         "transformer.set_attention_backend('flash') or '_native_cudnn'), or use Ulysses")
