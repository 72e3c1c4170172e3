"""Two-tower training throughput: TorchRec (EmbeddingBagCollection sharded by
DistributedModelParallel, fused optimizer in the backward pass) against the same model built
from plain `torch.nn.EmbeddingBag` tables with sparse gradients and the matching torch optimizer
(Adagrad for both Adagrads, SGD for SGD).

Both see the same batches (same KJTs, same loss, same MLPs, Adam for the dense part); the
figure is examples/s over timed steps after a warm-up, median (min-max) of --repeats runs.

    python bench/bench_train_throughput.py --data DIR   # DIR from `recengine generate`
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from embeddings.config import EmbeddingsConfig
from engine.config import EngineConfig
from embeddings.id_dropout import drop_ids
from embeddings.loss import sampled_softmax_loss
from embeddings.model import ITEM_TABLES, USER_TABLES, TableSizes, TwoTower, _mlp
from embeddings.sharding import join_world, leave_world, shard
from pipelines.batches import TrainingBatch, TrainingExamples, training_examples
from pipelines.config import load_config
from pipelines.dataset import build_features


class PlainTwoTower(nn.Module):
    """The same towers with one `nn.EmbeddingBag` per table (the peer)."""

    def __init__(self, sizes: TableSizes, cfg: EmbeddingsConfig) -> None:
        super().__init__()
        m = cfg.model
        self.bags = nn.ModuleDict({
            name: nn.EmbeddingBag(sizes.rows(name), m.embedding_dim, sparse=True,
                                  mode="mean" if pooling.name == "MEAN" else "sum")
            for name, (_, pooling) in {**USER_TABLES, **ITEM_TABLES}.items()})
        self.user_mlp = _mlp(m.embedding_dim * len(USER_TABLES), m.hidden, m.dim)
        self.item_mlp = _mlp(m.embedding_dim * len(ITEM_TABLES), m.hidden, m.dim)

    def _tower(self, kjt, tables, mlp) -> torch.Tensor:
        d = kjt.to_dict()
        x = torch.cat([self.bags[name](d[f].values(), d[f].offsets()[:-1])
                       for name, (f, _) in tables.items()], dim=1)
        return F.normalize(mlp(x), dim=-1)

    def forward(self, user, item, negatives=None):
        return (self._tower(user, USER_TABLES, self.user_mlp),
                self._tower(item, ITEM_TABLES, self.item_mlp), None)


def run_steps(model: nn.Module, step_opt: Callable[[], None], zero: Callable[[], None],
              batches: list[TrainingBatch], cfg: EmbeddingsConfig) -> float:
    """Examples/s over `batches` (each step: id dropout, forward, loss, backward, update)."""
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    n = 0
    for b in batches:
        u, v, _ = model(drop_ids(b.user, cfg.model.id_dropout, gen),
                        drop_ids(b.item, cfg.model.id_dropout, gen))
        loss = sampled_softmax_loss(u, v, b.item_idx, b.item_logq,
                                    temperature=cfg.train.temperature, weight=b.weight)
        zero()
        loss.backward()
        step_opt()
        n += len(b.item_idx)
    return n / (time.perf_counter() - t0)


def torchrec_rate(sizes: TableSizes, cfg: EmbeddingsConfig, batches: list[TrainingBatch],
                  warmup: int) -> float:
    world = join_world()
    try:
        dmp, opt, _ = shard(TwoTower(sizes, cfg.model), world, cfg.train)
        run_steps(dmp, opt.step, opt.zero_grad, batches[:warmup], cfg)
        return run_steps(dmp, opt.step, opt.zero_grad, batches[warmup:], cfg)
    finally:
        leave_world(world)


def plain_rate(sizes: TableSizes, cfg: EmbeddingsConfig, batches: list[TrainingBatch],
               warmup: int) -> float:
    model = PlainTwoTower(sizes, cfg)
    # torch has no row-wise Adagrad; its element-wise Adagrad is the nearest peer
    opt_class = torch.optim.SGD if cfg.train.sparse_optimizer == "sgd" else torch.optim.Adagrad
    sparse = opt_class(model.bags.parameters(), lr=cfg.train.sparse_lr)
    dense = torch.optim.Adam([*model.user_mlp.parameters(), *model.item_mlp.parameters()],
                             lr=cfg.train.dense_lr)

    def step() -> None:
        sparse.step()
        dense.step()

    def zero() -> None:
        sparse.zero_grad()
        dense.zero_grad()

    run_steps(model, step, zero, batches[:warmup], cfg)
    return run_steps(model, step, zero, batches[warmup:], cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, required=True, help="folder with config.toml")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sparse-optimizer", choices=["rowwise_adagrad", "adagrad", "sgd"],
                    default="rowwise_adagrad")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    cfg = load_config(args.data / "config.toml", EngineConfig)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"sparse_optimizer": args.sparse_optimizer})})
    t0 = time.perf_counter()
    fs = build_features(cfg)
    t_features = time.perf_counter() - t0
    t0 = time.perf_counter()
    ex: TrainingExamples = training_examples(fs, history_length=cfg.features.history_length,
                                             distinct=cfg.train.distinct_items)
    t_examples = time.perf_counter() - t0
    sizes = TableSizes.from_vocabs(fs.vocabs, price_buckets=cfg.features.price_buckets)
    rows = sum(sizes.rows(t) for t in [*USER_TABLES, *ITEM_TABLES])
    print(f"data {args.data}: {fs.interactions.height:,} positives, {len(ex):,} training "
          f"examples; tables {rows:,} rows x {cfg.model.embedding_dim}")
    print(f"  features {t_features:.1f} s, training examples {t_examples:.1f} s")
    t0 = time.perf_counter()
    batches = list(islice(ex.batches(args.batch_size, seed=0), args.warmup + args.steps))
    per_batch_ms = (time.perf_counter() - t0) / len(batches) * 1e3
    print(f"  batch building (numpy gathers + KJT) {per_batch_ms:.1f} ms per batch of "
          f"{args.batch_size} (not in the rates below)")
    rates: dict[str, list[float]] = {"torchrec": [], "plain": []}
    for _ in range(args.repeats):
        rates["torchrec"].append(torchrec_rate(sizes, cfg, batches, args.warmup))
        rates["plain"].append(plain_rate(sizes, cfg, batches, args.warmup))
    fused = args.sparse_optimizer.replace("_", "-")
    for name, label in (("torchrec", f"TorchRec EBC + DMP, fused {fused}"),
                        ("plain", "nn.EmbeddingBag, sparse grads + torch "
                                  + ("SGD" if args.sparse_optimizer == "sgd" else "Adagrad"))):
        r = rates[name]
        print(f"  {label:44s} {statistics.median(r):9,.0f} examples/s "
              f"({min(r):,.0f}-{max(r):,.0f})")
    ratio = statistics.median(rates["torchrec"]) / statistics.median(rates["plain"])
    print(f"  ratio TorchRec / plain: {ratio:.2f}x ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
