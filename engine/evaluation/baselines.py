"""Strong simple baselines, fitted on the same interactions and scored by the same code as
recengine's lists: popularity, item-kNN (cosine on the co-occurrence matrix), EASE (closed
form) and ALS (the `implicit` package).

Each baseline gives a score for every (evaluated user, item); `top_items` turns scores into
full-corpus lists with the user's seen items and the ineligible items removed, exactly as
recengine's own lists are filtered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from engine.candidates.itemitem import ItemItem, binary_matrix, top_of_scores
from engine.evaluation.config import EvaluationConfig

Scorer = Callable[[np.ndarray], np.ndarray]
"""user rows of the interaction matrix -> (n, n_items) float32 scores."""


@dataclass(frozen=True)
class Interactions:
    """The binary user x item matrix of the fit window (rows and columns by user_idx and
    item_idx) and the items each evaluated user may not be shown."""

    matrix: sp.csr_matrix  # (n_users, n_items) float32, 1 where the user had a positive

    @classmethod
    def build(
        cls, user_idx: np.ndarray, item_idx: np.ndarray, n_users: int, n_items: int
    ) -> Interactions:
        return cls(binary_matrix(user_idx, item_idx, n_users, n_items))

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[1])


def popularity(x: Interactions, recent: sp.csr_matrix | None = None) -> Scorer:
    """Users who interacted with each item (in `recent`, the last days, when given)."""
    counts = np.asarray((recent if recent is not None else x.matrix).sum(axis=0)).ravel()
    scores = counts.astype(np.float32)
    return lambda rows: np.broadcast_to(scores, (len(rows), len(scores)))  # a read-only view


def item_knn(x: Interactions, neighbours: int, shrink: float = 10.0) -> Scorer:
    """Score = sum of cosine similarities (co-occurrence / sqrt of both degrees, shrunk) of
    the item to the user's items, keeping each item's `neighbours` most similar items."""
    model = ItemItem.knn(x.matrix, neighbours=neighbours, shrink=shrink)
    return model.scores


def ease(x: Interactions, lam: float, max_items: int) -> Scorer:
    """EASE (Steck 2019) on the `max_items` most interacted items (a dense item x item
    matrix; items beyond never score)."""
    model = ItemItem.ease(x.matrix, lam=lam, max_items=max_items)
    return lambda rows: np.nan_to_num(model.scores(rows), nan=-np.inf)


def als(
    x: Interactions, factors: int, regularization: float, iterations: int, alpha: float, seed: int
) -> Scorer:
    """Implicit-feedback ALS (Hu, Koren and Volinsky) from the `implicit` package, confidence
    1 + alpha on the observed pairs."""
    from implicit.cpu.als import AlternatingLeastSquares

    conf = x.matrix.copy()
    conf.data = (1.0 + alpha * conf.data).astype(np.float32)
    with threadpool_limits(1, "blas"):  # implicit parallelises itself; nested BLAS threads thrash
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            iterations=iterations,
            random_state=seed,
            calculate_training_loss=False,
        )
        model.fit(conf, show_progress=False)
    users = np.asarray(model.user_factors, np.float32)
    items = np.asarray(model.item_factors, np.float32)
    return lambda rows: users[rows] @ items.T


GRIDS: dict[str, list[dict[str, float | None]]] = {
    "popularity": [{"days": d} for d in (1.0, 7.0, 30.0, None)],
    "item_knn": [{"neighbours": n} for n in (20.0, 100.0, 500.0)],
    "ease": [{"lam": v} for v in (20.0, 100.0, 500.0, 2000.0, 8000.0)],
    "als": [
        {"factors": f, "regularization": r, "alpha": a}
        for f in (16.0, 64.0)
        for r in (1.0, 10.0)
        for a in (1.0, 5.0)
    ],
}
"""What tuning tries on the validation window for each baseline (the config's values when
tuning is off)."""


def default_params(name: str, cfg: EvaluationConfig) -> dict[str, float | None]:
    defaults: dict[str, dict[str, float | None]] = {
        "popularity": {"days": cfg.popularity_days},
        "item_knn": {"neighbours": float(cfg.knn_neighbours)},
        "ease": {"lam": cfg.ease_lambda},
        "als": {
            "factors": float(cfg.als_factors),
            "regularization": cfg.als_regularization,
            "alpha": cfg.als_alpha,
        },
    }
    return defaults[name]


def _given(params: dict[str, float | None], name: str) -> float:
    """The value of parameter `name`, which this baseline needs."""
    value = params[name]
    if value is None:
        raise ValueError(f"the baseline parameter {name} needs a value")
    return value


def make_baseline(
    name: str,
    x: Interactions,
    recent: Callable[[float | None], sp.csr_matrix],
    params: dict[str, float | None],
    cfg: EvaluationConfig,
) -> Scorer:
    """The fitted scorer of baseline `name` with `params`; `recent(days)` is the matrix of
    the last `days` of the fit window (None: all of it)."""
    if name == "popularity":
        return popularity(x, recent(params["days"]))
    if name == "item_knn":
        return item_knn(x, int(_given(params, "neighbours")))
    if name == "ease":
        return ease(x, float(_given(params, "lam")), cfg.ease_max_items)
    if name == "als":
        return als(
            x,
            int(_given(params, "factors")),
            float(_given(params, "regularization")),
            cfg.als_iterations,
            float(_given(params, "alpha")),
            cfg.seed,
        )
    raise ValueError(f"unknown baseline {name!r}")


SCORES_PER_CHUNK = 1 << 26
"""Dense (user x item) scores held at once (256 MB of float32)."""


def top_items(
    score: Scorer, rows: np.ndarray, blocked: sp.csr_matrix, allowed: np.ndarray, k: int
) -> np.ndarray:
    """(n, k) item indices, best first, of each user row: never an item in the row's
    `blocked` (seen) or where `allowed` is False; -1 where fewer items score."""
    out = np.full((len(rows), k), -1, np.int64)
    chunk = max(1, SCORES_PER_CHUNK // max(len(allowed), 1))
    for a in range(0, len(rows), chunk):
        r = rows[a : a + chunk]
        s = np.asarray(score(r), dtype=np.float32)
        if not s.flags.writeable:  # a shared view (popularity): this chunk's own copy
            s = s.copy()
        s[:, ~allowed] = -np.inf
        b = blocked[r].tocoo()
        s[b.row, b.col] = -np.inf
        out[a : a + len(r)] = top_of_scores(s, k)
    return out
