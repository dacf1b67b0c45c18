"""Data-parallel training over ``torch.distributed`` (one process per device, launched by
``torchrun``): the one context object the training loop and the trainers consult.

Launch (README.md): ``torchrun --nproc_per_node=N -m recsys_ebm train ... --distributed``.
torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`data_parallel` reads them and joins the process group: ``nccl`` when the model's device is
CUDA (one GPU per process, ``cuda:LOCAL_RANK``), ``gloo`` on CPUs. Inside it, :func:`current`
returns the :class:`DataParallel` context; outside it returns None and nothing changes.

What a data-parallel step means here (PyTorch DDP's contract, Li et al., "PyTorch Distributed:
Experiences on Accelerating Data Parallel Training", VLDB 2020):

* Every rank draws the SAME global permutation from the shared seeded generator and takes its
  contiguous slice of each global minibatch (:meth:`DataParallel.local`), so over an epoch the
  ranks see disjoint users and the global batch is the 1-process batch.
* Gradients are all-reduced as the mean over the GLOBAL batch: rank r's batch-mean gradient is
  weighted by n_r / n before the sum (:meth:`DataParallel.all_reduce`), which is exact when the
  last batch does not split evenly. Every rank then takes the same optimiser step.
* Random numbers are drawn for the whole global batch on every rank from the shared generator,
  and each rank uses its rows (:class:`GlobalBatchGenerator`): CD's Bernoulli samples, and so the
  parameters, then equal a 1-process run's (up to the order of the float sums), and every rank's
  generator stays in the same state (the checkpoint holds one). Drawing B x I uniforms costs
  1/H of the B x I x H products each rank does anyway.
* In-batch negatives (InfoNCE) are all-gathered with autograd (:meth:`DataParallel.gather_rows`,
  ``torch.distributed.nn.functional.all_gather``): the candidate set is the global batch's, so
  the negatives grow with the world size, and logQ and accidental-hit masking see the 1-process
  candidates. Its backward sums each rank's gradient of the gathered rows back to their owner.
* Rank 0 alone validates, decides early stopping (broadcast), writes checkpoints, logs (MLflow)
  and shows progress; a checkpoint holds the global state, so N ranks' checkpoint resumes on M.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["DataParallel", "GlobalBatchGenerator", "current", "data_parallel", "split_sizes"]

T = TypeVar("T")
_ACTIVE: DataParallel | None = None
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def split_sizes(n: int, world_size: int) -> list[int]:
    """Rows of each rank in a global batch of ``n`` rows: contiguous, sizes differing by at most
    one (the first ``n % world_size`` ranks get one more)."""
    return [n // world_size + (r < n % world_size) for r in range(world_size)]


def _bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    sizes = split_sizes(n, world_size)
    lo = sum(sizes[:rank])
    return lo, lo + sizes[rank]


class GlobalBatchGenerator(torch.Generator):
    """A ``torch.Generator`` that, for CD's Bernoulli samples, draws the random numbers of the
    WHOLE global batch and keeps the rank's rows (module docstring).

    ``rows = (lo, n)`` (set by :meth:`DataParallel.local`) says where the rank's rows start in a
    global batch of ``n``; :meth:`uniform_rows` (the binary RBM's samples) draws the (n, X)
    uniforms of the global batch and returns the rank's rows lo..lo+n_r, and :meth:`bernoulli`
    of a (n_r, X) probability tensor (the softmax RBM's hidden samples) draws a (n, X) Bernoulli
    tensor with the rank's probabilities at those rows (the draw consumes the generator per
    element whatever the probabilities, on CPU and on CUDA's Philox) and returns them: both
    bit-identical to a 1-process draw of the global batch. Every other use is a plain generator.
    """

    rows: tuple[int, int] | None = None
    #: (first entry of the rank, entries of the global batch): the softmax RBM's per-rating
    #: uniforms (:meth:`uniform_entries`), set by :meth:`DataParallel.local_entries`
    entries: tuple[int, int] | None = None

    def uniform_entries(
        self, n_local: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """(n_local, 1) U(0, 1) draws, as the rank's entries of the global batch's (n, 1) draw
        (the softmax RBM's level sampling: one uniform per observed rating)."""
        if self.entries is None:
            return torch.rand(n_local, 1, generator=self, dtype=dtype, device=device)
        lo, n = self.entries
        full = torch.rand(n, 1, generator=self, dtype=dtype, device=device)  # (n, 1)
        return full[lo : lo + n_local]

    def uniform_rows(
        self, shape: torch.Size, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """(n_r, X) U(0, 1) draws, as the rank's rows of the global batch's (n, X) draw (the
        binary RBM's Gibbs samples: ``_rbm_math._bernoulli``)."""
        if self.rows is None:
            return torch.rand(shape, generator=self, dtype=dtype, device=device)
        lo, n = self.rows
        full = torch.rand((n, *shape[1:]), generator=self, dtype=dtype, device=device)
        return full[lo : lo + shape[0]]

    def bernoulli(self, p: torch.Tensor) -> torch.Tensor:
        """(n_r, X) 0/1 samples of ``p`` (n_r, X), drawn as rows of the global batch."""
        if self.rows is None:
            return torch.bernoulli(p, generator=self)
        lo, n = self.rows
        full = p.new_zeros((n, *p.shape[1:]))  # (n, X)
        full[lo : lo + p.shape[0]] = p
        return torch.bernoulli(full, generator=self)[lo : lo + p.shape[0]]


class DataParallel:
    """This process's place in the data-parallel group (module docstring).

    Args:
        rank, world_size, local_rank: torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``.
        device: the model's device (collectives run there: CUDA tensors with nccl).
    """

    def __init__(self, rank: int, world_size: int, local_rank: int, device: torch.device) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"rank: expected 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.device = device
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        #: (rows of this rank, rows of the global batch) of the last :meth:`local` call
        self.batch = (0, 0)

    @property
    def is_main(self) -> bool:
        """Rank 0: validates, logs, writes checkpoints and the model."""
        return self.rank == 0

    # ------------------------------------------------------------------ sharding
    def bounds(self, n: int) -> tuple[int, int]:
        """[lo, hi) of this rank's rows in a global batch of ``n`` rows."""
        return _bounds(n, self.world_size, self.rank)

    def local(
        self,
        rows: np.ndarray,
        generator: torch.Generator | None = None,
        draws_for: int | None = None,
    ) -> np.ndarray:
        """This rank's slice of a global minibatch ``rows`` (n,); records the split for
        :meth:`all_reduce` and, for a :class:`GlobalBatchGenerator`, for its Bernoulli draws:
        those of the batch's rows, or of ``draws_for`` global rows (PCD: the persistent
        chains', split as :meth:`local_block` splits them)."""
        lo, hi = self.bounds(len(rows))
        self.batch = (hi - lo, len(rows))
        if isinstance(generator, GlobalBatchGenerator):
            n = len(rows) if draws_for is None else draws_for
            generator.rows = (self.bounds(n)[0], n)
        return rows[lo:hi]

    def local_entries(
        self, counts: np.ndarray, generator: torch.Generator | None = None
    ) -> tuple[int, int]:
        """[lo, hi) of this rank's entries in a global batch whose rows hold ``counts`` (n,)
        entries each (the softmax RBM's ratings, ordered by row): the rows :meth:`local` gave
        this rank. Sets a :class:`GlobalBatchGenerator`'s :attr:`~GlobalBatchGenerator.entries`
        so that per-entry draws are the global batch's."""
        lo_row, hi_row = self.bounds(len(counts))
        lo, hi = int(counts[:lo_row].sum()), int(counts[:hi_row].sum())
        if isinstance(generator, GlobalBatchGenerator):
            generator.entries = (lo, int(counts.sum()))
        return lo, hi

    def local_block(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global tensor (e.g. its share of the persistent chains)."""
        lo, hi = self.bounds(t.shape[0])
        return t[lo:hi]

    @property
    def weight(self) -> float:
        """n_r / n of the last :meth:`local` split (this rank's share of the global mean)."""
        n_local, n = self.batch
        return n_local / n if n else 0.0

    # ------------------------------------------------------------------ collectives
    def all_reduce(self, grads: Mapping[str, torch.Tensor | None], weight: float | None = None):
        """The global-batch mean of per-rank batch-mean gradients, in place: sum over ranks of
        ``weight`` (default :attr:`weight`) x grad, in one flat collective. A missing (None)
        gradient counts as zeros; a rank with no rows contributes zeros (its NaN means of empty
        batches are dropped). Returns ``grads``."""
        w = self.weight if weight is None else weight
        names = [k for k, g in grads.items() if g is not None]
        if len(names) != len(grads):
            missing = sorted(set(grads) - set(names))
            raise ValueError(f"grads: expected a tensor for every name, got None for {missing}")
        flat = torch.cat([grads[k].detach().reshape(-1).float() for k in names])
        flat = flat * w if w else torch.zeros_like(flat)
        dist.all_reduce(flat)
        s = 0
        for k in names:
            g = grads[k]
            g.copy_(flat[s : s + g.numel()].view_as(g))
            s += g.numel()
        return grads

    def all_reduce_module(
        self,
        module: torch.nn.Module,
        weight: float | None = None,
        extra: torch.Tensor | None = None,
    ) -> None:
        """:meth:`all_reduce` of ``module``'s parameter gradients (None -> zeros first, so every
        rank reduces the same tensors), and of ``extra`` (weighted and summed in place in the
        same collective: e.g. the loss)."""
        grads = {} if extra is None else {"": extra}
        for name, p in module.named_parameters():
            if p.requires_grad:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                grads[name] = p.grad
        self.all_reduce(grads, weight)

    def backward(
        self,
        loss: torch.Tensor,
        anchor: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        module: torch.nn.Module,
    ) -> float:
        """One data-parallel backward of this rank's batch-mean ``loss``: zero the gradients,
        backpropagate :attr:`weight` x ``loss`` (the weight before the backward, since a
        :meth:`gather_rows` backward carries other ranks' terms), all-reduce the sum; returns the
        global batch's mean loss (reduced in the same collective). A rank with no rows
        backpropagates 0 x ``anchor`` (e.g. its empty (0, C) energies), so it still joins the
        gather's backward collective."""
        optimizer.zero_grad(set_to_none=True)
        n_local, _ = self.batch
        scaled = self.weight * loss if n_local else anchor.sum() * 0.0
        scaled.backward()
        total = scaled.detach().reshape(1).float().clone()
        self.all_reduce_module(module, weight=1.0, extra=total)
        return float(total)

    def sum(self, *values: float) -> list[float]:
        """The sums over ranks of a few float figures (e.g. an epoch's loss totals)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return [float(v) for v in t.cpu()]

    def gather_rows(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """(n, ...) the ranks' row blocks of a global batch of ``n`` rows, concatenated in rank
        order, with autograd (the backward sums every rank's gradient of a block back to its
        owner). Uneven blocks are padded to the largest for the collective."""
        import torch.distributed.nn.functional as dist_fn

        sizes = split_sizes(n, self.world_size)
        if t.shape[0] != sizes[self.rank]:
            raise ValueError(
                f"t: expected {sizes[self.rank]} rows (rank {self.rank} of a batch of {n}), "
                f"got {t.shape[0]}"
            )
        pad = max(sizes) - t.shape[0]
        if pad:
            t = torch.cat([t, t.new_zeros((pad, *t.shape[1:]))])
        if torch.is_grad_enabled() and t.requires_grad:
            parts = dist_fn.all_gather(t)
        else:
            parts = [torch.empty_like(t) for _ in range(self.world_size)]
            dist.all_gather(parts, t.contiguous())
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (pickled)."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def on_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0 alone and its result broadcast; when it raises, every rank
        raises (the same exception type and message), so no rank waits forever."""
        out: Any = None
        if self.is_main:
            try:
                out = ("ok", fn())
            except Exception as exc:  # re-raised below, on every rank
                out = ("error", _picklable(exc))
        status, value = self.broadcast_object(out)
        if status == "error":
            raise value
        return value


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def current() -> DataParallel | None:
    """The active data-parallel context (inside :func:`data_parallel`), else None."""
    return _ACTIVE


@contextlib.contextmanager
def data_parallel(
    device: torch.device, env: Mapping[str, str] | None = None
) -> Iterator[DataParallel]:
    """Join torchrun's process group for the duration (``nccl`` on CUDA, ``gloo`` on CPU) and
    make the context :func:`current`. On CUDA the process uses ``cuda:LOCAL_RANK``.

    Raises:
        ValueError: torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) is missing.
    """
    global _ACTIVE
    env = os.environ if env is None else env
    missing = [k for k in _ENV if k not in env]
    if missing:
        raise ValueError(
            f"distributed: expected torchrun's environment ({', '.join(_ENV)}), missing "
            f"{', '.join(missing)}; launch with `torchrun --nproc_per_node=N -m recsys_ebm "
            "train ... --distributed`"
        )
    rank, world, local = (int(env[k]) for k in _ENV)
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    ctx = DataParallel(rank, world, local, device)
    owns = not dist.is_initialized()
    if owns:
        # an hour: the other ranks wait in a broadcast while rank 0 validates a large split
        timeout = datetime.timedelta(hours=1)
        dist.init_process_group(ctx.backend, rank=rank, world_size=world, timeout=timeout)
    _ACTIVE = ctx
    try:
        yield ctx
        if owns:  # normal exit: no rank tears its connections down while a peer still reads
            dist.barrier()
    finally:
        _ACTIVE = None
        if owns:
            dist.destroy_process_group()
