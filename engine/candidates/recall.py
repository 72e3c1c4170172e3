"""Candidate recall: the share of each user's next (held-out, new-to-them) items that the
candidate set contains, per source and for the union. Items a stage loses here no later
stage can bring back."""

from __future__ import annotations

import polars as pl

from pipelines.scalars import float_or


def candidate_recall(
    candidates: pl.DataFrame, truth: pl.DataFrame, *, sources: list[str]
) -> dict[str, float]:
    """Mean over users in `truth` (user_idx, item_idx) of |candidates ∩ truth| / |truth|, for
    each source (rows whose `<source>_rank` is set) and for the union."""
    truth = truth.select("user_idx", "item_idx").unique()
    sizes = truth.group_by("user_idx").agg(pl.len().alias("n_truth"))
    hits = truth.join(candidates, on=["user_idx", "item_idx"], how="left")
    out: dict[str, float] = {}
    for name, found in [
        *((s, pl.col(f"{s}_rank").is_not_null()) for s in sources),
        ("union", pl.col("n_sources").fill_null(0) > 0),
    ]:
        per_user = (
            hits.group_by("user_idx").agg(found.sum().alias("hit")).join(sizes, on="user_idx")
        )
        out[name] = float_or((per_user["hit"] / per_user["n_truth"]).mean(), 0.0)
    return out
