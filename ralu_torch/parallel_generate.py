"""``ralu generate --context-parallel N`` and ``--cfg-parallel``: the processes of a launch
(``torchrun``, ``accelerate launch``; one node or several) grouped into generations of
``N x (2 with --cfg-parallel)`` ranks each (docs/parallel.md).

A launch of ``W`` processes makes ``W / (N x 2?)`` replicas: the images still to make are split
between the replicas as ``ralu generate`` splits them between processes without these flags
(data parallelism), and the ranks of one replica make the same images together, every rank
running the same calls (:mod:`ralu_torch.parallel`). Only a replica's first rank writes files
and manifest lines; the others compute and write nothing. Torch-free until :meth:`Split.enable`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ralu_schedule._errors import UsageError


@dataclass(frozen=True)
class Split:
    """How a launch's ``world`` processes are grouped: ``context`` ranks per guidance branch
    (context parallelism), ``cfg`` (the two branches on two groups), ``ring`` (ring attention
    instead of Ulysses)."""

    context: int = 1
    cfg: bool = False
    ring: bool = False
    world: int = 1

    @classmethod
    def from_args(cls, args, world: int) -> "Split":
        """The flags checked against the launch, before anything loads."""
        n = args.context_parallel
        if n < 1:
            raise UsageError(f"--context-parallel must be a positive number of processes, got {n}")
        if args.ring and n == 1:
            raise UsageError("--ring is the attention of context parallelism: give --context-parallel N (N > 1)")
        split = cls(context=n, cfg=bool(args.cfg_parallel), ring=bool(args.ring), world=world)
        per = split.per
        if per > 1 and world % per:
            what = f"--context-parallel {n}" + (" with --cfg-parallel" if split.cfg else "")
            need = (f"launch {per} processes (torchrun --nproc-per-node {per}, or accelerate launch --num_processes "
                    f"{per})" if world < per else f"launch a multiple of {per} processes")
            raise UsageError(f"{what} makes each image on {per} processes and this launch has {world}: {need}")
        return split

    @property
    def per(self) -> int:
        """Processes per generation."""
        return self.context * (2 if self.cfg else 1)

    @property
    def replicas(self) -> int:
        """Generations made side by side (the data-parallel split of the images)."""
        return self.world // self.per

    def check_family(self, family) -> None:
        """Refuse, before loading, a family that cannot split as asked."""
        from .backends.families import no_cfg_parallel, no_context_parallel

        if family is None or self.per == 1:
            return
        if self.context > 1 and not family.context_parallel:
            raise UsageError(no_context_parallel(family))
        if self.cfg and not family.cfg_parallel:
            raise UsageError(no_cfg_parallel(family))

    def share(self, rank: int) -> tuple:
        """``(replica, replicas)`` of process ``rank``: which share of the images it works on."""
        return rank // self.per, self.replicas

    def writes(self, rank: int) -> bool:
        """Whether process ``rank`` writes: the first of its generation's ranks."""
        return rank % self.per == 0

    def target(self, target, rank: int):
        """``target`` (job -> path) for a process that writes; for the others, no path."""
        return target if self.writes(rank) else (lambda job: None)

    def enable(self, pipe):
        """Split ``pipe``'s transformer(s) (:func:`ralu_torch.parallel.enable`); the process's
        :class:`~ralu_torch.parallel.Placement`."""
        from .parallel import Placement, enable

        if self.per == 1:
            return Placement()
        try:
            return enable(pipe, context_parallel=self.context, cfg_parallel=self.cfg, ring=self.ring)
        except ValueError as err:
            raise UsageError(str(err)) from None

