"""Where the model runs: the device, the process group, and the TorchRec sharding plan.

CPU or GPU is decided here and nowhere else. One process or N (under `torchrun`) run the same
code: a single process gets a one-member gloo group, so `DistributedModelParallel` always wraps
the model and the training loop never branches on the world size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.types import ShardingPlan, ShardingType
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from embeddings.config import TrainConfig
from embeddings.model import ITEM_TABLES, USER_TABLES, TwoTower

SPARSE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "rowwise_adagrad": RowWiseAdagrad,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
}


def device() -> torch.device:
    """The GPU of this process's local rank when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


@dataclass(frozen=True)
class World:
    """This process's place in the process group."""

    rank: int
    size: int
    device: torch.device
    owns_group: bool  # True when this code created the group (and must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_alone = False


@contextmanager
def one_process() -> Iterator[None]:
    """Within it, `join_world` opens a one-process group even under `torchrun`: a fit that one
    rank of a multi-process job makes by itself (the nightly's models are fitted on rank 0)."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def join_world() -> World:
    """Join the process group: the one `torchrun` describes in the environment (NCCL on GPU,
    gloo on CPU), or a one-process gloo group when run on its own (or in `one_process`)."""
    dev = device()
    if dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), dev, owns_group=False)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ and not _alone:
        dist.init_process_group(backend=backend)
    else:
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
    return World(dist.get_rank(), dist.get_world_size(), dev, owns_group=True)


def leave_world(world: World, *, wait: bool = False) -> None:
    """Leave the process group this code joined. `wait` (after a run every rank finished)
    meets the other ranks first: a rank that tears its group down while another is still in
    its last collective can abort the other at exit ("terminate called without an active
    exception"). Not after a failure, where a rank may never arrive."""
    if world.owns_group and dist.is_initialized():
        if wait and world.size > 1:
            dist.barrier()
        dist.destroy_process_group()


def sharding_plan(model: TwoTower, world: World, batch_size: int) -> ShardingPlan:
    """TorchRec's planner picks table-wise or row-wise sharding for each table (never plain
    data-parallel replication, so tables really are spread over the ranks)."""
    allowed = [ShardingType.TABLE_WISE.value, ShardingType.ROW_WISE.value]
    constraints = {
        name: ParameterConstraints(sharding_types=allowed) for name in [*USER_TABLES, *ITEM_TABLES]
    }
    topology = Topology(
        world_size=world.size,
        compute_device=world.device.type,
        local_world_size=min(world.size, int(os.environ.get("LOCAL_WORLD_SIZE", world.size))),
    )
    planner = EmbeddingShardingPlanner(
        topology=topology, batch_size=batch_size, constraints=constraints, debug=False
    )
    return planner.collective_plan(model, pg=dist.GroupMember.WORLD)


def shard(
    model: TwoTower, world: World, cfg: TrainConfig
) -> tuple[DistributedModelParallel, torch.optim.Optimizer, ShardingPlan]:
    """Wrap `model` in `DistributedModelParallel`.

    The embedding tables get TorchRec's fused optimizer (applied inside the backward pass, row
    by row, without materialising dense gradients); the MLPs get Adam. Returns the wrapped
    model, the dense optimizer and the plan.
    """
    sparse = [p for ebc in (model.user_ebc, model.item_ebc) for p in ebc.parameters()]
    _apply_optimizer_in_backward(
        SPARSE_OPTIMIZERS[cfg.sparse_optimizer], sparse, {"lr": cfg.sparse_lr}
    )
    plan = sharding_plan(model, world, cfg.batch_size)
    dmp = DistributedModelParallel(module=model, device=world.device, plan=plan)
    dense = [p for _, p in in_backward_optimizer_filter(dmp.named_parameters())]
    return dmp, torch.optim.Adam(dense, lr=cfg.dense_lr), plan


def unwrap(dmp: DistributedModelParallel) -> TwoTower:
    """The sharded `TwoTower` inside DMP (and DDP), for calls other than `forward`."""
    inner: nn.Module = dmp.module
    while not isinstance(inner, TwoTower):
        wrapped = getattr(inner, "module", None)
        if not isinstance(wrapped, nn.Module):
            break
        inner = wrapped
    assert isinstance(inner, TwoTower)
    return inner


def tables_per_rank(plan: ShardingPlan) -> dict[int, list[str]]:
    """Which tables (or row shards of them) each rank holds, from the plan."""
    out: dict[int, list[str]] = {}
    for module_plan in plan.plan.values():
        for table, ps in module_plan.items():
            for shard_meta in ps.sharding_spec.shards:
                rank = shard_meta.placement.rank()
                out.setdefault(rank, []).append(table)
    return out
