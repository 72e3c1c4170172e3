"""The candidate set: every source run over a chunk of users, duplicates merged into one row
per (user, item) that keeps each source's score and rank as re-ranker features."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
import polars as pl

from engine.candidates.collaborative import EaseSource, KnnSource, ease_fits
from engine.candidates.context import CandidateContext
from engine.candidates.covisit import CovisitSource
from engine.candidates.popular import ColdUserSource, RepeatSource, TrendingSource
from engine.candidates.sequence import TransitionSource
from engine.candidates.vectors import AnnSource, ContentSource


class CandidateSource(Protocol):
    """A source: `name`, and a call giving user_idx, item_idx, score, rank (best first,
    at most its configured size per user)."""

    name: str

    def __call__(self, users: np.ndarray) -> pl.DataFrame: ...


def default_sources(ctx: CandidateContext) -> list[CandidateSource]:
    """Every source whose size is above 0 and whose inputs exist (the ANN source needs the
    two-tower vectors and index, the content source the content-only vectors)."""
    cfg = ctx.cfg
    wanted: list[tuple[int, bool, Callable[[CandidateContext], CandidateSource]]] = [
        (cfg.ann, ctx.index is not None and ctx.user_vectors is not None, AnnSource),
        (cfg.covisit, True, CovisitSource),
        (cfg.content, ctx.content_vectors is not None, ContentSource),
        (cfg.trending, True, TrendingSource),
        (cfg.repeat, True, RepeatSource),
        (cfg.cold_user, True, ColdUserSource),
        (cfg.ease, ease_fits(ctx), EaseSource),
        (cfg.knn, True, KnnSource),
        (cfg.transitions, True, TransitionSource),
    ]
    return [make(ctx) for size, available, make in wanted if size > 0 and available]


def merge(parts: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per (user, item): `<source>_score` / `<source>_rank` (null where the source did
    not propose the item), `n_sources`, and `sources` (names, comma-joined)."""
    long = pl.concat([df.with_columns(pl.lit(name).alias("source")) for name, df in parts.items()])
    names = list(parts)
    wide = long.pivot(
        on="source",
        index=["user_idx", "item_idx"],
        values=["score", "rank"],
        aggregate_function="first",
    )
    rename = {f"{v}_{n}": f"{n}_{v}" for n in names for v in ("score", "rank")}
    wide = wide.rename({k: v for k, v in rename.items() if k in wide.columns})
    for n in names:
        for v, dtype in (("score", pl.Float64), ("rank", pl.Int32)):
            if f"{n}_{v}" not in wide.columns:
                wide = wide.with_columns(pl.lit(None, dtype).alias(f"{n}_{v}"))
    present = [pl.col(f"{n}_rank").is_not_null() for n in names]
    return (
        wide.with_columns(
            pl.sum_horizontal([p.cast(pl.Int32) for p in present]).alias("n_sources"),
            pl.concat_str(
                [pl.when(p).then(pl.lit(n)) for n, p in zip(names, present, strict=True)],
                separator=",",
                ignore_nulls=True,
            ).alias("sources"),
        )
        .select(
            "user_idx",
            "item_idx",
            *[f"{n}_{v}" for n in names for v in ("score", "rank")],
            "n_sources",
            "sources",
        )
        .sort("user_idx", "item_idx")
    )


def candidate_chunks(
    sources: Sequence[CandidateSource], users: np.ndarray, *, chunk: int = 10_000
) -> Iterator[tuple[dict[str, pl.DataFrame], pl.DataFrame]]:
    """(each source's candidates, the merged set) for consecutive chunks of `users`."""
    users = np.asarray(users, np.int64)
    for a in range(0, len(users), chunk):
        part = users[a : a + chunk]
        parts = {s.name: s(part) for s in sources}
        yield parts, merge(parts)


def generate_candidates(
    sources: Sequence[CandidateSource],
    users: np.ndarray,
    *,
    chunk: int = 10_000,
    report: Callable[[int], None] = lambda _: None,
) -> pl.DataFrame:
    """The merged candidate set of every user in `users`; `report(n)` after each chunk."""
    out = []
    for _parts, merged in candidate_chunks(sources, users, chunk=chunk):
        out.append(merged)
        report(int(merged["user_idx"].n_unique()) if merged.height else 0)
    return pl.concat(out) if out else merge({s.name: _empty() for s in sources})


def _empty() -> pl.DataFrame:
    return pl.DataFrame(
        schema={"user_idx": pl.Int64, "item_idx": pl.Int64, "score": pl.Float64, "rank": pl.Int32}
    )
