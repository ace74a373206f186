"""Data-parallel SAE training: what the processes exchange, and how.

Under ``accelerate launch`` (or ``torchrun``) every process trains a replica of the SAE
on its slice of each global batch. For the replicas to take the step one process would
take on the whole batch, they exchange more than gradients:

- gradients (averaged: the loss is a mean over tokens and every slice has as many);
- the per-latent "tokens since fired" counters (a latent fired if it fired anywhere);
- the inference-threshold statistics (BatchTopK: the batch's smallest selected
  activation; TopK: the mean over tokens of each token's smallest);
- BatchTopK's selection itself (the ``k x B`` largest pre-activations of the *global*
  batch) and the auxiliary loss's normaliser (the variance of the global residual);
- the step-0 batch, whose geometric median initialises the decoder bias.

``Reducer`` is the single-process case (every exchange is the identity), so trainers
call it unconditionally; ``ProcessGroupReducer`` runs the exchanges with
``torch.distributed`` (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)


class Reducer:
    """One process: every exchange returns its input (in place where it says so)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs (rank 0)."""
        return self.rank == 0

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over processes, in place."""
        return tensor

    def max_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum over processes, in place."""
        return tensor

    def min_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise minimum over processes, in place."""
        return tensor

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's tensor (same shape on all) concatenated along dim 0, in rank
        order."""
        return tensor

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every process's (picklable) object, in rank order."""
        return [obj]

    def barrier(self) -> None:
        """Wait for every process."""

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace each ``.grad`` by its mean over processes (one exchange for all)."""


class ProcessGroupReducer(Reducer):
    """The exchanges over an initialised ``torch.distributed`` process group."""

    def __init__(self, rank: int, world_size: int) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised")
        self._dist = dist
        self.rank = rank
        self.world_size = world_size

    def _reduce(self, tensor: torch.Tensor, op: Any) -> torch.Tensor:
        self._dist.all_reduce(tensor, op=op)
        return tensor

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._reduce(tensor, self._dist.ReduceOp.SUM)

    def max_(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._reduce(tensor, self._dist.ReduceOp.MAX)

    def min_(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._reduce(tensor, self._dist.ReduceOp.MIN)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        self._dist.all_gather(parts, tensor)
        return torch.cat(parts)

    def gather_objects(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        self._dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        self._dist.barrier()

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        with_grad = [p for p in params if p.grad is not None]
        flat = torch.cat([p.grad.reshape(-1) for p in with_grad])
        self.sum_(flat).div_(self.world_size)
        offset = 0
        for p in with_grad:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n


SINGLE = Reducer()
"""The single-process reducer."""


def current_reducer(device: str = "cpu") -> Reducer:
    """The launcher's processes (``SINGLE`` without a launcher). Under a launcher this
    initialises the process group through accelerate and pins CPU processes to one
    thread each."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SINGLE
    from musicsae_kedro.activations.shards import current_shard

    shard = current_shard(device)
    logger.info("SAE training: process %d of %d", shard.rank + 1, shard.world_size)
    return ProcessGroupReducer(shard.rank, shard.world_size)


class RankSlice:
    """This process's slice of every global batch of a resumable batch source.

    Every process reads the same global batches (so all share one reader position, and
    a checkpoint of any of them resumes all) and keeps rows
    ``[rank * B / N, (rank + 1) * B / N)``. Disk traffic grows with the number of
    processes; the SAE step, not the read, dominates a training step.
    """

    def __init__(self, source: Any, reducer: Reducer, where: str) -> None:
        self.source = source
        self.reducer = reducer
        batch = int(source.batch_size)
        if batch % reducer.world_size:
            raise MusicSAEError(
                where,
                f"the global batch of {batch} rows does not split evenly over "
                f"{reducer.world_size} processes",
                "use a batch_size that is a multiple of the number of processes",
            )
        self.batch_size = batch // reducer.world_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        first = self.reducer.rank * self.batch_size
        for batch_BD in self.source:
            yield batch_BD[first : first + self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)

    def close(self) -> None:
        self.source.close()
