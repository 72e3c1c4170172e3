"""Training lists for the re-ranker and its fit.

One cutoff gives one list per active user, a few thousand lists with a handful of positives
each on a small shop: too little for LambdaRank to learn more than the two-tower order. So
lists are made at several cutoffs, `cutoff_step_days` apart, going back from the latest one.
At each cutoff a two-tower model is trained on what came before it only (a fixed epoch count,
never looking at the label window), candidates and features are computed as of the cutoff, and
labels come from the `label_days` after it: the same view of the world the ranker gets when it
serves, repeated over time.

Where users come back rarely a global cutoff catches few of them (a few hundred lists on a
shop of 15k users), so lists can also be cut per user (`[rerank] lists`): each user's latest
interactions label, everything before them (and every other user's rows except their labels)
is the history the models, candidates and features are built from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from time import perf_counter

import lightgbm as lgb
import numpy as np
import polars as pl

from engine.candidates import candidate_chunks, default_sources, generate_candidates
from engine.config import EngineConfig
from engine.rerank.dataset import (
    attach_labels,
    rank_data,
    sample_negatives,
    split_users,
)
from engine.rerank.fallback import Ranker, SourceOrder, best_order, order_ndcgs
from engine.rerank.features import feature_frame, feature_names, hide_popularity, labels
from engine.rerank.ndcg import ndcg_per_query, paired_bootstrap
from engine.rerank.ranker import train_ranker
from engine.rerank.trees import dense
from engine.retrieval import TrainedRetrieval, retrieval_context, train_retrieval
from pipelines.dataset import FeatureSet, Window, build_features
from pipelines.split import per_user_cutoff
from pipelines.validate import Tables, validate_tables


def labelled_lists(
    cfg: EngineConfig,
    trained: TrainedRetrieval,
    *,
    window: Window,
    label_split: str,
    cutoff: int = 0,
    max_users: int | None = None,
    fs: FeatureSet | None = None,
) -> pl.DataFrame:
    """Candidates with features as of the end of `window` (`fs`, when the caller has it),
    labelled by `label_split`, for every user active in `label_split` (a random `max_users`
    of them when given); lists without a positive are dropped."""
    fs = fs or build_features(cfg, window=window)
    ctx, _ = retrieval_context(cfg, fs, trained)
    users = (
        fs.interactions.filter(pl.col("split") == label_split)["user_idx"]
        .unique()
        .sort()
        .to_numpy()
        .astype(np.int64)
    )
    if max_users is not None and len(users) > max_users:
        rng = np.random.default_rng(cfg.rerank.seed + cutoff)
        users = np.sort(rng.choice(users, max_users, replace=False))
    truth = labels(ctx, label_split)
    parts = []  # chunk by chunk: the features reuse what the sources computed for the chunk
    for _, cands in candidate_chunks(default_sources(ctx), users, chunk=cfg.jobs.user_chunk):
        frame = feature_frame(cands, ctx).with_columns(pl.lit(cutoff, pl.Int32).alias("cutoff"))
        parts.append(
            sample_negatives(
                attach_labels(frame, truth), cfg.rerank.negatives_per_list, cfg.rerank.seed + cutoff
            )
        )
    if not parts:  # no user to list: an empty frame with every column
        frame = feature_frame(generate_candidates(default_sources(ctx), users), ctx)
        parts.append(
            attach_labels(frame.with_columns(pl.lit(cutoff, pl.Int32).alias("cutoff")), truth)
        )
    return pl.concat(parts, how="diagonal_relaxed")


def shifted(cfg: EngineConfig, valid_start: datetime, label_days: float) -> EngineConfig:
    """`cfg` with its temporal split moved: train before `valid_start`, labels after it."""
    split = cfg.split.model_copy(
        update={
            "strategy": "temporal",
            "valid_start": valid_start,
            "test_start": valid_start + timedelta(days=label_days),
            "valid_days": None,
            "test_days": None,
        }
    )
    return cfg.model_copy(update={"split": split})


def list_mode(cfg: EngineConfig, tables: Tables, latest: datetime) -> str:
    """ "temporal" or "per_user" (see `[rerank] lists`): per-user cutoffs when the split is
    not temporal, or when the temporal cutoffs' label windows hold fewer than half the users
    that per-user cutoffs would give lists to."""
    rc = cfg.rerank
    if rc.lists != "auto":
        return rc.lists
    if cfg.split.strategy != "temporal":
        return "per_user"
    inter = tables.interactions.select("user_id", "ts")
    temporal = 0
    for n in range(rc.training_cutoffs):
        at = latest - timedelta(days=n * rc.cutoff_step_days)
        active = inter.filter(
            (pl.col("ts") >= at) & (pl.col("ts") < at + timedelta(days=rc.label_days))
        )
        temporal += min(active["user_id"].n_unique(), rc.users_per_cutoff or 1 << 62)
    returning = int((inter.group_by("user_id").len()["len"] >= 2).sum())
    per_user = min(returning, rc.per_user_lists or 1 << 62)
    return "temporal" if temporal >= per_user / 2 else "per_user"


def per_user_lists(
    cfg: EngineConfig,
    tables: Tables,
    *,
    epochs: int,
    drop_test: bool,
    report: Callable[[str], None] = lambda _: None,
) -> pl.DataFrame:
    """Labelled lists at per-user cutoffs: each user's latest `label_share` of positives
    label (column `cutoff` is 0). The two-tower model, the candidates and every feature see
    only the rows before each user's cutoff and no row of any user's labels; with
    `drop_test` the configured test rows are gone too (lists for a model scored on them).
    While there are fewer than `target_lists` lists, every user is cut again before the last
    cut's labels (`cutoff` 1, 2, ...; at most `per_user_cuts` cuts)."""
    rc = cfg.rerank
    parts: list[pl.DataFrame] = []
    lists = 0
    for step in range(rc.per_user_cuts):
        report("training lists at per-user cutoffs" + (f" ({step + 1} back)" if step else ""))
        cut = partial(per_user_cutoff, share=rc.label_share, drop_test=drop_test, step=step)
        fs = build_features(cfg, window="train", tables=tables, resplit=cut)
        trained = train_retrieval(cfg, epochs=epochs, fs=fs)
        part = labelled_lists(
            cfg,
            trained,
            window="train",
            label_split="valid",
            cutoff=step,
            max_users=rc.per_user_lists,
            fs=fs,
        )
        parts.append(part)
        lists += part["user_idx"].n_unique()
        if lists >= rc.target_lists or part.is_empty():
            break
    return pl.concat(parts, how="diagonal_relaxed").sort("cutoff", "user_idx", "item_idx")


def training_lists(
    cfg: EngineConfig,
    latest: datetime,
    *,
    epochs: int,
    report: Callable[[str], None] = lambda _: None,
    exclude_test: bool = False,
    tables: Tables | None = None,
) -> pl.DataFrame:
    """Labelled lists of `cfg.rerank.training_cutoffs` cutoffs, the latest at `latest`, the
    others `cutoff_step_days` apart before it; column `cutoff` counts back from 0. Or, where
    `list_mode` says so, lists at per-user cutoffs (`per_user_lists`; `exclude_test` keeps
    the configured test rows out of them, as `latest` does for temporal cutoffs)."""
    rc = cfg.rerank
    tables = tables or validate_tables(cfg.data, cfg.columns)  # the same at every cutoff
    if list_mode(cfg, tables, latest) == "per_user":
        return per_user_lists(cfg, tables, epochs=epochs, drop_test=exclude_test, report=report)
    parts = []
    for n in range(rc.training_cutoffs):
        at = latest - timedelta(days=n * rc.cutoff_step_days)
        report(f"training lists as of {at:%Y-%m-%d}")
        c = shifted(cfg, at, rc.label_days)
        fs = build_features(c, window="train", tables=tables)
        trained = train_retrieval(c, epochs=epochs, fs=fs)
        parts.append(
            labelled_lists(
                c,
                trained,
                window="train",
                label_split="valid",
                cutoff=n,
                max_users=rc.users_per_cutoff,
                fs=fs,
            )
        )
    return pl.concat(parts, how="diagonal_relaxed").sort("cutoff", "user_idx", "item_idx")


@dataclass(frozen=True)
class FittedRanker:
    """What orders the lists (the booster, or a signal's order where the booster could not be
    trusted: `fallback` says why), the features it reads and its NDCG on held-out users,
    beside each signal's own order on the same lists (`orders`)."""

    ranker: Ranker
    names: list[str]
    holdout_ndcg: float
    holdout_two_tower_ndcg: float | None
    orders: dict[str, float] = field(default_factory=dict)
    lists: int = 0
    fallback: str | None = None
    tried: dict[int, float] = field(default_factory=dict)  # num_leaves -> held-out NDCG
    chosen: int | None = None  # num_leaves kept

    @property
    def num_leaves(self) -> int | None:
        """The leaf count of the published booster (None for a signal order)."""
        return None if self.fallback else self.chosen

    @property
    def tried_text(self) -> str:
        """The leaf counts tried and their held-out NDCG, as figures and the report show them."""
        return " ".join(f"num_leaves={k}:{v:.4f}" for k, v in self.tried.items())

    @property
    def trees(self) -> int:
        r = self.ranker
        return 0 if isinstance(r, SourceOrder) else (r.best_iteration or r.current_iteration())


def _order(reason: str, orders: dict[str, float], lists: int) -> FittedRanker:
    col = best_order(orders)
    return FittedRanker(
        SourceOrder(col, reason),
        [col],
        orders.get(col, 0.0),
        orders.get("two_tower"),
        orders,
        lists,
        reason,
    )


def fit_ranker(lists: pl.DataFrame, cfg: EngineConfig) -> FittedRanker:
    """LightGBM ranking on `lists`, early-stopped on NDCG@`ndcg_at` of a share of whole
    users (one fit per leaf count tried, the best kept); or, with fewer than `min_lists` lists
    or a fit that loses to a signal on the held-out users, that signal's order
    (`engine.rerank.fallback`)."""
    rc = cfg.rerank
    names = feature_names(lists)
    n = lists.select("cutoff", "user_idx").n_unique() if not lists.is_empty() else 0
    fit, hold = split_users(lists, rc.holdout_share, seed=rc.seed)
    if n < max(rc.min_lists, 2) or fit.is_empty() or hold.is_empty():
        return _order(
            f"{n} training lists (users with a positive among their candidates), "
            f"fewer than [rerank] min_lists = {rc.min_lists}",
            order_ndcgs(lists, rc.ndcg_at),
            n,
        )
    if rc.popularity_dropout > 0:
        hidden = pl.struct("cutoff", "item_idx").hash(rc.seed) % 10_000 < int(
            rc.popularity_dropout * 10_000
        )
        fit = hide_popularity(fit, hidden)
    valid, train = rank_data(hold, names), rank_data(fit, names)
    fits: dict[int, tuple[lgb.Booster, np.ndarray]] = {}
    start = perf_counter()
    for leaves in dict.fromkeys([rc.num_leaves, *rc.other_leaves]):
        if fits and perf_counter() - start >= rc.choice_seconds:
            break
        b = train_ranker(train, names, rc.model_copy(update={"num_leaves": leaves}), valid=valid)
        fits[leaves] = (
            b,
            ndcg_per_query(
                valid.y,
                dense(b.predict(valid.x, num_iteration=b.best_iteration or None)),
                valid.group,
                rc.ndcg_at,
            ),
        )
    tried = {leaves: float(per.mean()) for leaves, (_, per) in fits.items()}
    chosen = choose_leaves(fits, cheaper_within_noise=rc.cheaper_within_noise, seed=rc.seed)
    booster, ndcg = fits[chosen][0], tried[chosen]
    orders = order_ndcgs(hold, rc.ndcg_at)
    best = best_order(orders)
    if orders and ndcg <= orders[best]:
        return replace(
            _order(
                f"the re-ranker's held-out NDCG@{rc.ndcg_at} {ndcg:.4f} is not "
                f"above the {best} order's {orders[best]:.4f}",
                orders,
                n,
            ),
            tried=tried,
        )
    return FittedRanker(
        booster, names, ndcg, orders.get("two_tower"), orders, n, tried=tried, chosen=chosen
    )


def predict_cost(booster: lgb.Booster) -> float:
    """What a prediction walks per row: the trees kept x the mean depth of their leaves."""
    dump = booster.dump_model(num_iteration=booster.best_iteration or None)["tree_info"]
    kept = dump[: booster.best_iteration or len(dump)]

    def depths(node: dict, d: int) -> list[int]:
        if "leaf_index" in node or "split_index" not in node:
            return [d]
        return depths(node["left_child"], d + 1) + depths(node["right_child"], d + 1)

    return float(sum(np.mean(depths(t["tree_structure"], 0)) for t in kept))


def choose_leaves(
    fits: dict[int, tuple[lgb.Booster, np.ndarray]], *, cheaper_within_noise: bool, seed: int = 0
) -> int:
    """The leaf count to keep among `fits` (booster, held-out NDCG per list): the best mean,
    or with `cheaper_within_noise` the cheapest to predict whose 95% paired bootstrap
    interval of the per-list difference from the best reaches 0."""
    best = max(fits, key=lambda leaves: float(fits[leaves][1].mean()))
    if not cheaper_within_noise:
        return best
    cost = {leaves: predict_cost(b) for leaves, (b, _) in fits.items()}
    for leaves in sorted(fits, key=cost.__getitem__):
        if cost[leaves] >= cost[best]:
            break
        _, _, upper = paired_bootstrap(fits[leaves][1], fits[best][1], seed=seed)
        if upper >= 0:
            return leaves
    return best
