"""Training loop of the two-tower model, the same on one process or N under `torchrun`.

Each epoch walks a seeded permutation of the examples (every rank its equal share of each
global step), applies id dropout, and minimises the logQ-corrected sampled softmax; the
embedding tables step inside the backward pass (TorchRec's fused optimizer), the MLPs with Adam.
After each epoch, validation recall@K (exact search over the full corpus) decides early
stopping; the best epoch's weights, gathered into one unsharded state dict, are the result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torchrec.inference.state_dict_transform import state_dict_gather

from embeddings.config import EmbeddingsConfig
from embeddings.encode import item_vectors, user_vectors
from embeddings.id_dropout import drop_ids
from embeddings.loss import sampled_softmax_loss
from embeddings.model import TableSizes, TwoTower
from embeddings.progress import StepInfo
from embeddings.retrieval_eval import HeldOut, recall_at_k, vector_scores
from embeddings.sharding import World, join_world, leave_world, shard, tables_per_rank, unwrap
from pipelines.batches import ItemTable, TrainingBatch, TrainingExamples, training_examples
from pipelines.dataset import FeatureSet


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    loss: float  # mean training loss of the epoch (over all ranks)
    recall: float | None  # validation recall@K, None without validation
    seconds: float
    examples: int  # examples seen by all ranks together


@dataclass
class TrainResult:
    """The best weights (unsharded, on rank 0; empty on the other ranks) and how we got there."""

    state_dict: dict[str, torch.Tensor]
    sizes: TableSizes
    epochs: list[EpochResult]
    best_epoch: int
    known_items: np.ndarray  # (n_items,) bool: items with training examples
    known_users: np.ndarray  # (n_users,) bool: users with training examples
    tables_per_rank: dict[int, list[str]] = field(default_factory=dict)
    world_size: int = 1
    rank: int = 0  # this process's rank in the (now closed) process group

    @property
    def best_recall(self) -> float | None:
        return self.epochs[self.best_epoch].recall


def _ignore(_: StepInfo) -> None:
    pass


def _mean_over_ranks(x: float, world: World) -> float:
    if world.size == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world.size


def gather_state_dict(dmp: torch.nn.Module, template: TwoTower) -> dict[str, torch.Tensor]:
    """The sharded model's weights as one plain state dict (complete on rank 0), with the keys
    of an unsharded `TwoTower`, so one process can load what N processes trained."""
    dst = {k: torch.empty_like(v, device="cpu") for k, v in template.state_dict().items()}
    state_dict_gather(dmp.state_dict(), dst)
    return dst


def validation_recall(
    model: TwoTower,
    ex: TrainingExamples,
    items: ItemTable,
    ho: HeldOut,
    *,
    known_items: np.ndarray,
    known_users: np.ndarray,
    k: int,
    batch_size: int,
    device: torch.device,
) -> float:
    """Recall@k of `model` on the held-out positives, with exact search over all items."""
    iv = item_vectors(model, items, known_items, batch_size=batch_size, device=device)
    uv = user_vectors(model, ex.users, ho.users, known_users, batch_size=batch_size, device=device)
    return recall_at_k(vector_scores(uv, iv), ho, k)


def train_two_tower(
    fs: FeatureSet,
    cfg: EmbeddingsConfig,
    *,
    validation: HeldOut | None = None,
    splits: tuple[str, ...] = ("train",),
    progress: Callable[[StepInfo], None] = _ignore,
) -> TrainResult:
    """Train on the positives of `splits`; early-stop on `validation` recall@K when given.

    Joins (or creates) the process group, so the same call trains on one process or as one
    rank of `torchrun`.
    """
    tc = cfg.train
    world = join_world()
    finished = False
    try:
        torch.manual_seed(tc.seed)
        ex = training_examples(
            fs,
            history_length=cfg.features.history_length,
            splits=splits,
            distinct=tc.distinct_items,
        )
        sizes = TableSizes.from_vocabs(fs.vocabs, price_buckets=cfg.features.price_buckets)
        known_items = np.bincount(ex.item_idx, minlength=sizes.item) > 0
        known_users = np.bincount(ex.user_idx, minlength=sizes.user) > 0
        template = TwoTower(sizes, cfg.model)
        dmp, dense_opt, plan = shard(TwoTower(sizes, cfg.model, device=world.device), world, tc)
        model = unwrap(dmp)
        gen = torch.Generator().manual_seed(tc.seed + 1000 * world.rank)
        neg_rng = np.random.default_rng(tc.seed)
        steps = max(1, math.ceil(len(ex) / (tc.batch_size * world.size)))
        ho = validation.subset(tc.eval_users, seed=tc.seed) if validation is not None else None

        def logq(b: TrainingBatch) -> torch.Tensor:
            """The batch's log sampling probabilities, or a constant (no correction)."""
            if tc.logq_correction:
                return b.item_logq
            return torch.full_like(b.item_logq, -math.log(tc.batch_size))

        history: list[EpochResult] = []
        best, best_state, bad = -1.0, {}, 0
        for epoch in range(tc.epochs):
            dmp.train()
            t0, n_seen, loss_sum, n_steps = time.perf_counter(), 0, 0.0, 0
            for step, b in enumerate(
                ex.batches(tc.batch_size, seed=tc.seed + epoch, rank=world.rank, world=world.size)
            ):
                user = drop_ids(b.user, cfg.model.id_dropout, gen).to(world.device)
                item = drop_ids(b.item, cfg.model.id_dropout, gen).to(world.device)
                neg_idx = None
                neg_kjt = None
                if tc.random_negatives:
                    neg_idx = neg_rng.integers(1, sizes.item, tc.random_negatives)
                    neg_kjt = ex.items.kjt(neg_idx).to(world.device)
                u, v, nv = dmp(user, item, neg_kjt)
                loss = sampled_softmax_loss(
                    u,
                    v,
                    b.item_idx.to(world.device),
                    logq(b).to(world.device),
                    temperature=tc.temperature,
                    weight=b.weight.to(world.device),
                    neg_item=nv,
                    n_items=sizes.item,
                    neg_idx=None if neg_idx is None else torch.from_numpy(neg_idx).to(world.device),
                )
                dense_opt.zero_grad()
                loss.backward()
                dense_opt.step()
                n_seen += len(b.item_idx) * world.size
                loss_sum += float(loss.detach())
                n_steps += 1
                if world.is_main:
                    progress(
                        StepInfo(
                            epoch,
                            step + 1,
                            steps,
                            loss_sum / n_steps,
                            n_seen / max(time.perf_counter() - t0, 1e-9),
                        )
                    )
            seconds = time.perf_counter() - t0
            recall = None
            if ho is not None:
                dmp.eval()
                recall = validation_recall(
                    model,
                    ex,
                    ex.items,
                    ho,
                    known_items=known_items,
                    known_users=known_users,
                    k=tc.recall_k,
                    batch_size=tc.batch_size,
                    device=world.device,
                )
            history.append(
                EpochResult(
                    epoch,
                    _mean_over_ranks(loss_sum / max(n_steps, 1), world),
                    recall,
                    seconds,
                    n_seen,
                )
            )
            score = recall if recall is not None else float(epoch)  # no validation: keep last
            if score > best:
                best, bad = score, 0
                best_state = gather_state_dict(dmp, template)
            else:
                bad += 1
                if bad >= tc.patience:
                    break

        def recall_or_epoch(e: int) -> float:
            measured = history[e].recall
            return measured if measured is not None else e

        best_epoch = max(range(len(history)), key=recall_or_epoch)
        result = TrainResult(
            state_dict=best_state if world.is_main else {},
            sizes=sizes,
            epochs=history,
            best_epoch=best_epoch,
            known_items=known_items,
            known_users=known_users,
            tables_per_rank=tables_per_rank(plan),
            world_size=world.size,
            rank=world.rank,
        )
        finished = True
        return result
    finally:
        leave_world(world, wait=finished)
