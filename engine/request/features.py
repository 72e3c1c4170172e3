"""The re-ranker's feature matrix for one known user's candidates, over the version's arrays:
column for column what `engine.rerank.features.feature_frame` computes for the same rows (the
frame path stays the reference the ranker is trained on; a test holds the two equal)."""

from __future__ import annotations

import numpy as np

from engine.request.candidates import UserCandidates
from engine.request.tables import RequestTables
from engine.rerank.features import POPULARITY
from engine.rerank.similarity import recent_similarity, row_dot


def _rank_desc(v: np.ndarray) -> np.ndarray:
    """Polars' rank("min", descending=True): 1 + how many values are larger."""
    s = np.sort(v)
    return (len(v) - np.searchsorted(s, v, "right") + 1).astype(np.float64)


def _share(items: np.ndarray, weights: np.ndarray, cats: np.ndarray, keys: np.ndarray
           ) -> np.ndarray:
    """Share of `weights` whose item falls in each of `keys` (0 where none does)."""
    total = weights.sum()
    out = np.zeros(len(keys))
    if total == 0:
        return out
    known = cats[items]
    for c in np.unique(keys[keys >= 0]):
        out[keys == c] = weights[known == c].sum() / total
    return out


def feature_columns(t: RequestTables, c: UserCandidates) -> dict[str, np.ndarray]:
    """Every re-ranker feature of the user's candidates, by name (float64, NaN missing)."""
    ctx, items, u = t.ctx, c.items, c.user
    n = len(items)
    f: dict[str, np.ndarray] = {}
    for name in c.ranks:
        f[f"{name}_score"], f[f"{name}_rank"] = c.scores[name], c.ranks[name]
    f["n_sources"] = c.n_sources.astype(np.float64)
    users = np.full(n, u, np.int64)
    last = c.recent.items.astype(np.int64)[None, :] if len(c.recent.items) else \
        np.full((1, 1), -1, np.int64)
    weight = c.recent.weights.astype(np.float32)[None, :] if len(c.recent.items) else \
        np.zeros((1, 1), np.float32)
    row = np.zeros(n, np.int64)
    if ctx.user_vectors is not None and ctx.item_vectors is not None:
        f["two_tower"] = row_dot(users, items, ctx.user_vectors, ctx.item_vectors)
        f["recent_tt_max"], f["recent_tt_mean"] = recent_similarity(
            row, items, last, weight, ctx.item_vectors)
    if ctx.content_vectors is not None:
        f["recent_content_max"], f["content_sim"] = recent_similarity(
            row, items, last, weight, ctx.content_vectors)
    for name, scored in c.dense.items():
        f[f"{name}_score"] = scored.at(np.zeros(n, np.int64), items).astype(np.float64)
    if "next" in c.ranks:
        nxt_items, nxt_scores = c.next_scores
        at = np.minimum(np.searchsorted(nxt_items, items), max(len(nxt_items) - 1, 0))
        hit = (nxt_items[at] == items) if len(nxt_items) else np.zeros(n, bool)
        f["next_score"] = np.where(hit, nxt_scores[at] if len(nxt_items) else 0.0, 0.0)
    col = t.items
    for name, values in col.items():
        f[name] = values[items].astype(np.float64)
    for name in t.counts:
        f[name] = np.nan_to_num(f[name], nan=0.0)
    top, leaf, brand = (col["top_category"][items], col["leaf_category"][items],
                        col["brand_idx"][items])
    f["category_affinity"] = np.nan_to_num(t.affinity.values(u, top, "category_affinity"))
    f["category_share"] = np.nan_to_num(t.affinity.values(u, top, "category_share"))
    f["brand_share"] = np.nan_to_num(t.brands.values(u, brand, "brand_share"))
    f["leaf_share"] = np.nan_to_num(t.leaves.values(u, leaf, "leaf_share"))
    f["days_since_category"] = t.categories.values(u, top, "days_since_category")
    f["user_item_events"] = np.nan_to_num(t.pairs.values(u, items, "user_item_events"))
    f["days_since_user_item"] = t.pairs.values(u, items, "days_since_user_item")
    for name, values in t.user_stats.items():
        f[name] = np.full(n, values[u] if 0 <= u < len(values) else np.nan)
    for name in ("user_events", "user_items"):
        f[name] = np.nan_to_num(f[name])
    f["recent_top_share"] = _share(c.recent.items, c.recent.weights, col["top_category"], top)
    f["recent_leaf_share"] = _share(c.recent.items, c.recent.weights, col["leaf_category"],
                                    leaf)
    with np.errstate(divide="ignore", invalid="ignore"):
        f["price_ratio"] = f["price"] / f.pop("user_mean_price")
    for name in [k for k in f if k.startswith("count_")]:
        f[f"{name}_rank_in_list"] = _rank_desc(f[name])
    if "two_tower" in f:
        tt = f["two_tower"]
        f["two_tower_rank_in_list"] = _rank_desc(tt.astype(np.float64))
        f["two_tower_gap"] = tt - tt.max() if n else tt
    hidden = np.isnan(f["days_since_last"])
    for name in [k for k in f if k.startswith(POPULARITY)]:
        f[name] = np.where(hidden, np.nan, f[name])
    for name in ("top_category", "leaf_category", "brand_idx"):
        f.pop(name)
    return f


def feature_matrix(t: RequestTables, c: UserCandidates, names: list[str]) -> np.ndarray:
    """(candidates, len(names)) float64: the ranker's input, columns in its order."""
    f = feature_columns(t, c)
    x = np.empty((len(c.items), len(names)))
    for j, name in enumerate(names):
        x[:, j] = f[name]
    return x
