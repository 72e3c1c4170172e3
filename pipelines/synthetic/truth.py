"""The generator's hidden model, loaded back for oracle rankings."""

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
    user_factor: np.ndarray   # (U, d)
    user_drift: np.ndarray    # (U, d)
    item_factor: np.ndarray   # (I, d)
    item_bias: np.ndarray     # (I,)
    tau: float
    start: datetime
    end: datetime

    @classmethod
    def load(cls, folder: Path) -> GroundTruth:
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        u = pl.read_parquet(folder / "users.parquet")
        i = pl.read_parquet(folder / "items.parquet")
        return cls(
            user_ids=u["user_id"].cast(pl.String), item_ids=i["item_id"].cast(pl.String),
            user_factor=u["factor"].to_numpy(), user_drift=u["drift"].to_numpy(),
            item_factor=i["factor"].to_numpy(), item_bias=i["bias"].to_numpy(),
            tau=float(meta["tau"]), start=datetime.fromisoformat(meta["start"]),
            end=datetime.fromisoformat(meta["end"]),
        )

    def pair_utility(self, user_ids: pl.Series, item_ids: pl.Series, at: datetime) -> np.ndarray:
        """(N,) true utility of each (user id, item id) pair at time `at` (NaN where either id
        is not in the ground truth)."""
        return self._pair_utility(self.rows_of(user_ids, self.user_ids),
                                  self.rows_of(item_ids, self.item_ids), at)

    def _pair_utility(self, u: np.ndarray, i: np.ndarray, at: datetime) -> np.ndarray:
        f = np.float32(self._f(at))
        ok = (u >= 0) & (i >= 0)
        taste = self.user_factor[u[ok]] + f * self.user_drift[u[ok]]
        out = np.full(len(u), np.nan)
        out[ok] = np.einsum("nd,nd->n", taste, self.item_factor[i[ok]]) / self.tau \
            + self.item_bias[i[ok]]
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
        return (pl.DataFrame({"id": ids.cast(pl.String)})
                .join(table, on="id", how="left", maintain_order="left")["row"]
                .fill_null(-1).to_numpy())

    def _f(self, at: datetime) -> float:
        return (at - self.start).total_seconds() / (self.end - self.start).total_seconds()

    def utility(self, user_rows: np.ndarray, at: datetime) -> np.ndarray:
        """True utility of every item for the given user rows at time `at`: shape (n, I)."""
        taste = self.user_factor[user_rows] + np.float32(self._f(at)) * self.user_drift[user_rows]
        return taste @ self.item_factor.T / self.tau + self.item_bias[None, :]
