"""The generator's hidden model, loaded back for oracle rankings.

In a bursty set (meta.json "activity" = "bursty") the next pick also depends on the user's
history: after a view of item h, the next view is h's chain successor next(h) with probability
rho = chain_follow, else the usual pick. The oracle's next-item distribution is

    p(i | u, t, h) = (1 - rho) * softmax_i(util(u, i, t)) + rho * [i = next(h)]

with h the user's last view before t (`last_items`). `utility(rows, at, last_items=h)` returns
it on the utility scale: util(u, next(h), t) becomes
log(exp(util(u, next(h), t)) + rho / (1 - rho) * sum_i exp(util(u, i, t))); every other item
keeps util, so the ranking is that of p. Without `last_items` (or in a weekly set) utility is
util alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl


@dataclass(frozen=True)
class GroundTruth:
    """True utilities: util(u, i, t) = (p_u + f(t) d_u) . q_i / tau + b_i."""

    user_ids: pl.Series
    item_ids: pl.Series
    user_factor: np.ndarray  # (U, d)
    user_drift: np.ndarray  # (U, d)
    item_factor: np.ndarray  # (I, d)
    item_bias: np.ndarray  # (I,)
    tau: float
    start: datetime
    end: datetime
    successor: np.ndarray | None = None  # (I,) row of each item's chain successor, -1: none
    chain_follow: float = 0.0  # probability that the next view is the successor

    @classmethod
    def load(cls, folder: Path) -> GroundTruth:
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        u = pl.read_parquet(folder / "users.parquet")
        i = pl.read_parquet(folder / "items.parquet")
        item_ids = i["item_id"].cast(pl.String)
        successor = (
            cls.rows_of(i["next_item_id"], item_ids) if "next_item_id" in i.columns else None
        )
        return cls(
            user_ids=u["user_id"].cast(pl.String),
            item_ids=i["item_id"].cast(pl.String),
            user_factor=u["factor"].to_numpy(),
            user_drift=u["drift"].to_numpy(),
            item_factor=i["factor"].to_numpy(),
            item_bias=i["bias"].to_numpy(),
            tau=float(meta["tau"]),
            start=datetime.fromisoformat(meta["start"]),
            end=datetime.fromisoformat(meta["end"]),
            successor=successor,
            chain_follow=float(meta.get("chain_follow", 0.0)),
        )

    @property
    def has_chains(self) -> bool:
        """Whether the next pick depends on the history (a bursty set with chains)."""
        return self.successor is not None and self.chain_follow > 0

    def pair_utility(
        self,
        user_ids: pl.Series,
        item_ids: pl.Series,
        at: datetime,
        last_item_ids: pl.Series | None = None,
    ) -> np.ndarray:
        """(N,) true utility of each (user id, item id) pair at time `at` (NaN where either id
        is not in the ground truth). With `last_item_ids` (each pair's user's last view before
        `at`, null for none), a pair whose item is the chain successor of that view gets the
        chain term, as in `utility`."""
        u, i = self.rows_of(user_ids, self.user_ids), self.rows_of(item_ids, self.item_ids)
        out = self._pair_utility(u, i, at)
        if last_item_ids is None or not self.has_chains:
            return out
        nxt = self._next_of(self.rows_of(last_item_ids, self.item_ids))
        hit = np.flatnonzero((u >= 0) & (i >= 0) & (nxt >= 0) & (nxt == i))
        for a in range(0, len(hit), 4096):
            rows = hit[a : a + 4096]
            out[rows] = self._chain_term(out[rows], self.utility(u[rows], at))
        return out

    def _pair_utility(self, u: np.ndarray, i: np.ndarray, at: datetime) -> np.ndarray:
        f = np.float32(self._f(at))
        ok = (u >= 0) & (i >= 0)
        taste = self.user_factor[u[ok]] + f * self.user_drift[u[ok]]
        out = np.full(len(u), np.nan)
        out[ok] = (
            np.einsum("nd,nd->n", taste, self.item_factor[i[ok]]) / self.tau + self.item_bias[i[ok]]
        )
        return out

    def click_rate(self, user_ids: pl.Series, item_ids: pl.Series, at: datetime) -> np.ndarray:
        """(N,) true probability that the user clicks the ad when shown it at `at` (the
        generator's click model: a logistic of the personal part and the bias of utility)."""
        from pipelines.synthetic.ads import CTR_BIAS, CTR_OFFSET, CTR_PERSONAL

        i = self.rows_of(item_ids, self.item_ids)
        util = self._pair_utility(self.rows_of(user_ids, self.user_ids), i, at)
        bias = self.item_bias[np.maximum(i, 0)]
        logit = CTR_PERSONAL * (util - bias) + CTR_BIAS * bias + CTR_OFFSET
        return 1.0 / (1.0 + np.exp(-logit))

    @staticmethod
    def rows_of(ids: pl.Series, known: pl.Series) -> np.ndarray:
        """(N,) row of each id in `known` (the ground truth's user or item ids), -1 if absent."""
        table = pl.DataFrame({"id": known, "row": np.arange(len(known))})
        return (
            pl.DataFrame({"id": ids.cast(pl.String)})
            .join(table, on="id", how="left", maintain_order="left")["row"]
            .fill_null(-1)
            .to_numpy()
        )

    def _f(self, at: datetime) -> float:
        return (at - self.start).total_seconds() / (self.end - self.start).total_seconds()

    def utility(
        self, user_rows: np.ndarray, at: datetime, last_items: np.ndarray | None = None
    ) -> np.ndarray:
        """True utility of every item for the given user rows at time `at`: shape (n, I).

        `last_items` (n,): the item row of each user's last view before `at` (-1: none; see
        `last_items`). In a set with chains, the successor of that view gets the chain term
        (module docstring); without it, or in a weekly set, this is util alone."""
        taste = self.user_factor[user_rows] + np.float32(self._f(at)) * self.user_drift[user_rows]
        util = taste @ self.item_factor.T / self.tau + self.item_bias[None, :]
        if last_items is None or not self.has_chains:
            return util
        nxt = self._next_of(np.asarray(last_items))
        rows = np.flatnonzero(nxt >= 0)
        util[rows, nxt[rows]] = self._chain_term(util[rows, nxt[rows]], util[rows])
        return util

    def last_items(self, interactions: pl.DataFrame, at: datetime) -> np.ndarray:
        """(U,) item row of each ground-truth user's last view before `at` (-1: none), from an
        interactions table in the data contract (user_id, item_id, ts, event): the history
        `utility` takes, e.g. `utility(rows, at, last_items=gt.last_items(inter, at)[rows])`."""
        last = (
            interactions.filter((pl.col("event") == "view") & (pl.col("ts") < at))
            .group_by("user_id")
            .agg(pl.col("item_id").sort_by("ts").last())
        )
        out = np.full(len(self.user_ids), -1, np.int64)
        u = self.rows_of(last["user_id"], self.user_ids)
        i = self.rows_of(last["item_id"], self.item_ids)
        out[u[u >= 0]] = i[u >= 0]
        return out

    def _next_of(self, items: np.ndarray) -> np.ndarray:
        """(n,) successor row of each item row (-1 for none or for -1)."""
        assert self.successor is not None
        return np.where(items >= 0, self.successor[np.maximum(items, 0)], -1)

    def _chain_term(self, util_next: np.ndarray, util_rows: np.ndarray) -> np.ndarray:
        """The successor's utility with the chain term: log(exp(u_next) + rho / (1 - rho) *
        sum_i exp(u_i)), for rows of full utility vectors `util_rows` (n, I)."""
        m = util_rows.max(1)
        lse = m + np.log(np.exp(util_rows - m[:, None]).sum(1))
        rho = self.chain_follow
        return np.logaddexp(util_next, np.log(rho / (1 - rho)) + lse)
