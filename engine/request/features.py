"""The re-ranker's feature matrix of users' candidates, over the version's arrays: column for
column what `engine.rerank.features.feature_frame` computes for the same rows (the frame path
stays the reference the ranker is trained on; a test holds the two equal)."""

from __future__ import annotations

import numpy as np

from engine import kernels
from engine.request.candidates import Candidates
from engine.request.tables import RequestTables
from engine.rerank.features import POPULARITY
from engine.rerank.similarity import vector_columns


def _zero_nan(x: np.ndarray) -> np.ndarray:
    """Missing (NaN) as 0, as the frame path's `fill_null(0)` (infinities stay)."""
    return np.where(np.isnan(x), 0.0, x)


def rank_desc(row: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Polars' rank("min", descending=True) within each `row` group (rows sorted by user): 1 +
    how many values of the group are larger: numpy's sort by value (its vectorised
    quicksort), regrouped by user with a counting sort, then a compiled walk (a block's
    `lexsort` took 1.4x as long: 8.9 against 6.4 ms over 147,552 rows)."""
    row, v = np.asarray(row, np.int64), np.asarray(v, np.float64)
    order = np.argsort(v)
    if len(row) and row[0] != row[-1]:
        order = kernels.by_row(row, order)
    return kernels.ranks_from_order(row, v, order)


def _recent_matrix(c: Candidates) -> tuple[np.ndarray, np.ndarray]:
    """(users, R) recent items (-1 padded) and weights, as `similarity._recent_matrix`."""
    rec = c.recent
    n = max(int(np.bincount(rec.row, minlength=1).max()) if len(rec.row) else 1, 1)
    last = np.full((len(c.users), n), -1, np.int64)
    weight = np.zeros((len(c.users), n), np.float32)
    slot = kernels.run_places(rec.row)
    last[rec.row, slot] = rec.items
    weight[rec.row, slot] = rec.weights
    return last, weight


def _recent_share(c: Candidates, cats: np.ndarray, keys: np.ndarray, width: int) -> np.ndarray:
    """Share of each user's recent weights whose item falls in the row's category `keys`
    (0 where none does or the category is null); `width` exceeds every category."""
    rec = c.recent
    total = np.bincount(rec.row, weights=rec.weights, minlength=len(c.users))
    rk = rec.row * width + cats[rec.items]
    ok = cats[rec.items] >= 0
    uniq, inv = np.unique(rk[ok], return_inverse=True)
    sums = np.bincount(inv, weights=rec.weights[ok], minlength=len(uniq))
    q = c.row * width + keys
    out = np.zeros(len(keys))
    if len(uniq):
        at = np.minimum(np.searchsorted(uniq, q), len(uniq) - 1)
        hit = (uniq[at] == q) & (keys >= 0)
        out[hit] = sums[at[hit]] / total[c.row[hit]]
    return out


def feature_columns(t: RequestTables, c: Candidates) -> dict[str, np.ndarray]:
    """Every re-ranker feature of the candidates, by name (NaN missing)."""
    ctx, items, row = t.ctx, c.items, c.row
    users = c.users[row]
    n = len(items)
    f: dict[str, np.ndarray] = {}
    for name in c.ranks:
        f[f"{name}_score"], f[f"{name}_rank"] = c.scores[name], c.ranks[name]
    f["n_sources"] = c.n_sources.astype(np.float64)
    f.update(vector_columns(ctx, users, items, row, *_recent_matrix(c)))
    for name, scored in c.item_item.items():
        f[f"{name}_score"] = scored.at(row, items).astype(np.float64)
    if "next" in c.ranks:
        nxt, n_items = c.next_scores, np.int64(len(ctx.eligible))
        at = kernels.find(
            nxt.row * n_items + nxt.item,  # sorted: grouped by (row, item)
            row * n_items + items,
        )
        f["next_score"] = kernels.take_found(nxt.score, at, 0.0)
    col = t.items
    for name, values in col.items():
        f[name] = values[items].astype(np.float64)
    for name in t.counts:
        f[name] = _zero_nan(f[name])
    top, leaf, brand = (
        col["top_category"][items],
        col["leaf_category"][items],
        col["brand_idx"][items],
    )
    affinity = t.affinity.columns(users, top, ["category_affinity", "category_share"])
    f["category_affinity"] = _zero_nan(affinity["category_affinity"])
    f["category_share"] = _zero_nan(affinity["category_share"])
    f["brand_share"] = _zero_nan(t.brands.values(users, brand, "brand_share"))
    f["leaf_share"] = _zero_nan(t.leaves.values(users, leaf, "leaf_share"))
    f["days_since_category"] = t.categories.values(users, top, "days_since_category")
    pairs = t.pairs.columns(users, items, ["user_item_events", "days_since_user_item"])
    f["user_item_events"] = _zero_nan(pairs["user_item_events"])
    f["days_since_user_item"] = pairs["days_since_user_item"]
    inside = (users >= 0) & (users < len(next(iter(t.user_stats.values()))))
    at = np.where(inside, users, 0)
    for name, values in t.user_stats.items():
        f[name] = np.where(inside, values[at], np.nan)
    for name in ("user_events", "user_items"):
        f[name] = _zero_nan(f[name])
    f["recent_top_share"] = _recent_share(c, col["top_category"], top, t.key_width["top_category"])
    f["recent_leaf_share"] = _recent_share(
        c, col["leaf_category"], leaf, t.key_width["leaf_category"]
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        f["price_ratio"] = f["price"] / f.pop("user_mean_price")
    for name in [k for k in f if k.startswith("count_")]:
        f[f"{name}_rank_in_list"] = rank_desc(row, f[name])
    if "two_tower" in f:
        tt = f["two_tower"]
        f["two_tower_rank_in_list"] = rank_desc(row, tt.astype(np.float64))
        if n:
            starts, ends = kernels.run_bounds(row)
            best = np.maximum.reduceat(tt, starts)
            f["two_tower_gap"] = tt - np.repeat(best, ends - starts)
        else:
            f["two_tower_gap"] = tt
    hidden = np.isnan(f["days_since_last"])
    for name in [k for k in f if k.startswith(POPULARITY)]:
        f[name] = np.where(hidden, np.nan, f[name])
    for name in ("top_category", "leaf_category", "brand_idx"):
        f.pop(name)
    return f


def feature_matrix(t: RequestTables, c: Candidates, names: list[str]) -> np.ndarray:
    """(candidates, len(names)) float64: the ranker's input, columns in its order."""
    f = feature_columns(t, c)
    x = np.empty((len(c.items), len(names)))
    for j, name in enumerate(names):
        x[:, j] = f[name]
    return x
