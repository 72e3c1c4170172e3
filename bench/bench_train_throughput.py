"""Benchmark 5, training: two-tower examples/s end to end (`train_two_tower`, the nightly
job's loop: batches built from the feature pipeline's examples, id dropout, the sharded model,
the loss, the fused sparse optimizer in the backward pass, Adam on the MLPs) beside the raw
TorchRec EBC kernel on the same sharded tables (forward and backward of the two
`EmbeddingBagCollection`s alone, with the same fused optimizer, on prebuilt batches), and, at
one process, the same towers built from plain `torch.nn.EmbeddingBag` tables (sparse
gradients, torch Adagrad) as the peer TorchRec replaces.

One process, or N under torchrun (each rank a 1-thread process; the figures are for all ranks
together, rank 0 prints and writes them):

    python bench/bench_train_throughput.py --data DIR        # DIR from `recengine generate`
    torchrun --nproc_per_node 2 bench/bench_train_throughput.py --data DIR

The tables are the data set's full vocabularies; `--examples` positives (a random sample of
the training window) make each timed epoch, median (min-max) of --repeats epochs.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from itertools import islice
from pathlib import Path

import polars as pl
import torch
import torch.nn.functional as F
from harness import Report, limits
from torch import nn

from embeddings.config import EmbeddingsConfig
from embeddings.id_dropout import drop_ids
from embeddings.loss import sampled_softmax_loss
from embeddings.model import ITEM_TABLES, USER_TABLES, TableSizes, TwoTower, _mlp
from embeddings.sharding import World, join_world, leave_world, shard, unwrap
from embeddings.train import train_two_tower
from engine.config import EngineConfig
from pipelines.batches import TrainingBatch, training_examples
from pipelines.config import load_config
from pipelines.dataset import FeatureSet, build_features


class PlainTwoTower(nn.Module):
    """The same towers with one `nn.EmbeddingBag` per table (the peer)."""

    def __init__(self, sizes: TableSizes, cfg: EmbeddingsConfig) -> None:
        super().__init__()
        m = cfg.model
        self.bags = nn.ModuleDict(
            {
                name: nn.EmbeddingBag(
                    sizes.rows(name),
                    m.embedding_dim,
                    sparse=True,
                    mode="mean" if pooling.name == "MEAN" else "sum",
                )
                for name, (_, pooling) in {**USER_TABLES, **ITEM_TABLES}.items()
            }
        )
        self.user_mlp = _mlp(m.embedding_dim * len(USER_TABLES), m.hidden, m.dim)
        self.item_mlp = _mlp(m.embedding_dim * len(ITEM_TABLES), m.hidden, m.dim)

    def _tower(self, kjt, tables, mlp) -> torch.Tensor:
        d = kjt.to_dict()
        x = torch.cat(
            [
                self.bags[name](d[f].values(), d[f].offsets()[:-1])
                for name, (f, _) in tables.items()
            ],
            dim=1,
        )
        return F.normalize(mlp(x), dim=-1)

    def forward(self, user, item, negatives=None):
        return (
            self._tower(user, USER_TABLES, self.user_mlp),
            self._tower(item, ITEM_TABLES, self.item_mlp),
            None,
        )


def run_steps(
    model: nn.Module,
    step_opt: Callable[[], None],
    zero: Callable[[], None],
    batches: list[TrainingBatch],
    cfg: EmbeddingsConfig,
) -> float:
    """Examples/s of the plain peer over `batches` (id dropout, forward, loss, backward,
    update)."""
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    n = 0
    for b in batches:
        u, v, _ = model(
            drop_ids(b.user, cfg.model.id_dropout, gen), drop_ids(b.item, cfg.model.id_dropout, gen)
        )
        loss = sampled_softmax_loss(
            u, v, b.item_idx, b.item_logq, temperature=cfg.train.temperature, weight=b.weight
        )
        zero()
        loss.backward()
        step_opt()
        n += len(b.item_idx)
    return n / (time.perf_counter() - t0)


def plain_rate(
    sizes: TableSizes, cfg: EmbeddingsConfig, batches: list[TrainingBatch], warmup: int
) -> float:
    model = PlainTwoTower(sizes, cfg)
    # torch has no row-wise Adagrad; its element-wise Adagrad is the nearest peer
    opt_class = torch.optim.SGD if cfg.train.sparse_optimizer == "sgd" else torch.optim.Adagrad
    sparse = opt_class(model.bags.parameters(), lr=cfg.train.sparse_lr)
    dense = torch.optim.Adam(
        [*model.user_mlp.parameters(), *model.item_mlp.parameters()], lr=cfg.train.dense_lr
    )

    def step() -> None:
        sparse.step()
        dense.step()

    def zero() -> None:
        sparse.zero_grad()
        dense.zero_grad()

    run_steps(model, step, zero, batches[:warmup], cfg)
    return run_steps(model, step, zero, batches[warmup:], cfg)


def dense_flops(model: TwoTower, batch: int, dim: int) -> float:
    """Matmul FLOPs per example of a training step outside the embedding tables: both towers'
    MLPs and the in-batch logits (`batch` x `dim` per example), forward and backward (3x)."""
    mlp = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    return 6.0 * (mlp + batch * dim)


def end_to_end(fs: FeatureSet, cfg: EngineConfig, repeats: int) -> list[float]:
    """Examples/s (all ranks) of `repeats` one-epoch `train_two_tower` runs."""
    one = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 1})})
    rates = []
    for seed in range(repeats):
        run = one.model_copy(update={"train": one.train.model_copy(update={"seed": seed})})
        epoch = train_two_tower(fs, run).epochs[0]
        rates.append(epoch.examples / epoch.seconds)
    return rates


def raw_ebc(
    sizes: TableSizes, cfg: EngineConfig, batches: list[TrainingBatch], warmup: int, world: World
) -> float:
    """Examples/s (all ranks) of the two sharded EBCs alone: forward, a sum as the loss,
    backward (which applies the fused optimizer)."""
    dmp, _, _ = shard(TwoTower(sizes, cfg.model, device=world.device), world, cfg.train)
    model = unwrap(dmp)

    def steps(part: list[TrainingBatch]) -> float:
        t0, n = time.perf_counter(), 0
        for b in part:
            user = model.user_ebc(b.user.to(world.device)).values()
            item = model.item_ebc(b.item.to(world.device)).values()
            (user.sum() + item.sum()).backward()
            n += len(b.item_idx) * world.size
        return n / (time.perf_counter() - t0)

    steps(batches[:warmup])
    return steps(batches[warmup:])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True, help="folder with config.toml")
    ap.add_argument(
        "--examples",
        type=int,
        default=200_000,
        help="training positives sampled for each timed epoch",
    )
    ap.add_argument("--steps", type=int, default=60, help="timed steps of the raw EBC kernel")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    world = join_world()
    try:
        run(args, world)
    finally:
        leave_world(world)


def run(args: argparse.Namespace, world: World) -> None:
    cfg = load_config(args.data / "config.toml", EngineConfig)
    tc = cfg.train
    t0 = time.perf_counter()
    fs = build_features(cfg)
    t_features = time.perf_counter() - t0
    train = fs.interactions.filter(pl.col("split") == "train")
    if train.height > args.examples:
        fs = replace(fs, interactions=train.sample(args.examples, seed=0))
    ex = training_examples(
        fs, history_length=cfg.features.history_length, distinct=tc.distinct_items
    )
    sizes = TableSizes.from_vocabs(fs.vocabs, price_buckets=cfg.features.price_buckets)
    rows = sum(sizes.rows(t) for t in [*USER_TABLES, *ITEM_TABLES])
    report = Report(f"training_{world.size}proc", args)
    say = print if world.is_main else (lambda *a, **k: None)
    say(
        f"data {args.data}: features {t_features:.0f} s; {len(ex):,} examples an epoch; "
        f"{len(USER_TABLES) + len(ITEM_TABLES)} tables, {rows:,} rows x "
        f"{cfg.model.embedding_dim}; batch {tc.batch_size} per process, {world.size} "
        f"process(es), {torch.get_num_threads()} thread(s) each",
        flush=True,
    )
    e2e = end_to_end(fs, cfg, args.repeats)
    batches = list(
        islice(
            ex.batches(tc.batch_size, seed=0, rank=world.rank, world=world.size),
            args.warmup + args.steps,
        )
    )
    raw = [raw_ebc(sizes, cfg, batches, args.warmup, world) for _ in range(args.repeats)]
    if not world.is_main:
        return
    # this rank's GEMM rate (its threads), times the ranks: each has cores of its own
    gemm = statistics.median(limits(3)["gemm_gflops"]) * 1e9 * world.size
    flops = dense_flops(
        TwoTower(sizes, cfg.model, device=torch.device("meta")), tc.batch_size, cfg.model.dim
    )
    bound = 1 / (1 / statistics.median(raw) + flops / gemm)
    procs = f"{world.size} process" + ("es" if world.size > 1 else "")
    report.add(f"raw EBC kernel, fused {tc.sparse_optimizer} ({procs})", raw, "examples/s")
    ratio = statistics.median(e2e) / statistics.median(raw)
    report.add(
        f"two-tower training end to end ({procs})",
        e2e,
        "examples/s",
        ratio=("raw EBC kernel", ratio),
        goal=">= 0.7x raw EBC",
        met=ratio >= 0.7,
        note=f"{statistics.median(e2e) / bound:.2f}x the bound of the kernel plus "
        f"the dense GEMMs at the GEMM limit",
    )
    report.add(
        f"bound: raw EBC time + {flops / 1e6:.2f} MFLOP/example of dense GEMMs at "
        f"{gemm / 1e9:.0f} GFLOP/s",
        bound,
        "examples/s",
        ratio=("raw EBC kernel", bound / statistics.median(raw)),
    )
    if world.size == 1:
        plain = [plain_rate(sizes, cfg, batches, args.warmup) for _ in range(args.repeats)]
        report.add(
            "the same towers on nn.EmbeddingBag, sparse grads + torch Adagrad (prebuilt batches)",
            plain,
            "examples/s",
        )
    report.finish()


if __name__ == "__main__":
    main()
