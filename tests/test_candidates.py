"""Candidate sources share one contract (sizes, ranks, eligibility, no seen items); the union
merges duplicates and keeps each source's score; co-visitation and recall have known answers
on hand-made data."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.candidates import (
    CandidateContext,
    CandidatesConfig,
    candidate_recall,
    default_sources,
    generate_candidates,
    merge,
)
from engine.candidates.context import Once
from engine.candidates.covisit import covisitation
from engine.index import IndexConfig, build_index
from pipelines.dataset import FeatureSet

CFG = CandidatesConfig(
    ann=30,
    covisit=20,
    content=10,
    trending=10,
    repeat=5,
    cold_user=15,
    ease=12,
    knn=12,
    transitions=8,
)


@pytest.fixture(scope="module")
def ctx(small_features: FeatureSet) -> CandidateContext:
    """Random unit vectors stand in for the model: the contract is about what may come back."""
    fs = small_features
    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        x = rng.normal(size=(n, 16)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    items, users = unit(fs.vocabs.item.size), unit(fs.vocabs.user.size)
    products = fs.items.filter(pl.col("kind") == "product")["item_idx"].to_numpy()
    index, _ = build_index(items[products], products, IndexConfig(k=30, eval_queries=20))
    return CandidateContext.build(
        fs, CFG, user_vectors=users, index=index, content_vectors=unit(fs.vocabs.item.size)
    )


@pytest.fixture(scope="module")
def users(small_features: FeatureSet) -> np.ndarray:
    """Users with histories and users without (new since the window)."""
    with_history = set(small_features.history["user_idx"].to_list())
    all_users = small_features.users["user_idx"].to_numpy()
    cold = [u for u in all_users if u not in with_history][:15]
    warm = [u for u in all_users if u in with_history][:60]
    return np.array(warm + cold, dtype=np.int64)


def sources_by_name(ctx: CandidateContext) -> dict[str, object]:
    return {s.name: s for s in default_sources(ctx)}


SOURCE_SIZE = {"ease": "ease", "knn": "knn", "next": "transitions"}


@pytest.mark.parametrize(
    "name", ["ann", "covisit", "content", "trending", "repeat", "cold_user", "ease", "knn", "next"]
)
def test_source_contract(ctx: CandidateContext, users: np.ndarray, name: str) -> None:
    source = sources_by_name(ctx)[name]
    df = source(users)  # type: ignore[operator]
    size = getattr(CFG, SOURCE_SIZE.get(name, name))
    assert df.columns == ["user_idx", "item_idx", "score", "rank"]
    assert df.height > 0, f"{name} proposed nothing"
    assert set(df["user_idx"].to_list()) <= set(users.tolist())
    per_user = df.group_by("user_idx").agg(
        pl.len().alias("n"), pl.col("rank"), pl.col("score"), pl.col("item_idx")
    )
    for row in per_user.iter_rows(named=True):
        assert row["n"] <= size
        assert row["rank"] == list(range(1, row["n"] + 1))
        assert all(a >= b for a, b in zip(row["score"], row["score"][1:], strict=False))
        assert len(set(row["item_idx"])) == row["n"]
    assert ctx.eligible[df["item_idx"].to_numpy()].all(), "ineligible item proposed"
    pairs = df.select("user_idx", "item_idx").join(
        ctx.seen.with_columns(pl.col("user_idx").cast(pl.Int64), pl.col("item_idx").cast(pl.Int64)),
        on=["user_idx", "item_idx"],
        how="semi",
    )
    if name == "repeat":
        assert pairs.height == df.height, "repeat proposes only the user's own items"
    else:
        assert pairs.height == 0, f"{name} proposed items the user has seen"


def test_cold_user_source_serves_only_users_without_history(
    ctx: CandidateContext, users: np.ndarray
) -> None:
    df = sources_by_name(ctx)["cold_user"](users)  # type: ignore[operator]
    with_history = set(
        ctx.fs.history.filter(pl.col("history").list.len() > 0)["user_idx"].to_list()
    )
    served = set(df["user_idx"].to_list())
    assert served and not served & with_history


def test_union_merges_duplicates_and_keeps_every_score(
    ctx: CandidateContext, users: np.ndarray
) -> None:
    sources = default_sources(ctx)
    parts = {s.name: s(users) for s in sources}
    merged = merge(parts)
    assert merged.select(pl.struct("user_idx", "item_idx").is_unique().all()).item()
    total_pairs = pl.concat([p.select("user_idx", "item_idx") for p in parts.values()]).unique()
    assert merged.height == total_pairs.height
    for name, part in parts.items():
        back = (
            merged.filter(pl.col(f"{name}_rank").is_not_null())
            .select(
                "user_idx",
                "item_idx",
                pl.col(f"{name}_score").alias("score"),
                pl.col(f"{name}_rank").alias("rank"),
            )
            .sort("user_idx", "item_idx")
        )
        assert back.equals(part.sort("user_idx", "item_idx")), name
    counted = sum(merged[f"{n}_rank"].is_not_null().cast(pl.Int32) for n in parts)
    assert (merged["n_sources"] == counted).all()
    chunked = generate_candidates(sources, users, chunk=17).sort("user_idx", "item_idx")
    assert_frame_equal(chunked, merged)  # scores agree to float tolerance across batch sizes


def test_covisitation_pairs_items_within_the_window_only() -> None:
    t = datetime(2026, 1, 10)
    pos = pl.DataFrame(
        {
            "user_idx": [1, 1, 1, 2, 2],
            "item_idx": [10, 11, 12, 10, 11],
            "ts": [t, t + timedelta(hours=1), t + timedelta(days=3), t, t + timedelta(hours=2)],
        }
    )
    cfg = CandidatesConfig(covisit_window_hours=24, covisit_half_life_days=1000)
    table = covisitation(pos.lazy(), at=t + timedelta(days=4), cfg=cfg).collect()
    pairs = {(a, b): w for a, b, w in table.iter_rows()}
    assert set(pairs) == {(10, 11), (11, 10)}
    assert pairs[(10, 11)] == pytest.approx(2.0, rel=0.01)  # two users, barely decayed


def test_candidate_recall_counts_hits_per_user() -> None:
    cands = merge(
        {
            "a": pl.DataFrame(
                {
                    "user_idx": [1, 1, 2],
                    "item_idx": [5, 6, 7],
                    "score": [1.0, 0.5, 1.0],
                    "rank": [1, 2, 1],
                }
            ),
            "b": pl.DataFrame({"user_idx": [2], "item_idx": [8], "score": [1.0], "rank": [1]}),
        }
    )
    truth = pl.DataFrame({"user_idx": [1, 1, 2, 2], "item_idx": [5, 9, 8, 10]})
    got = candidate_recall(cands, truth, sources=["a", "b"])
    assert got == {"a": pytest.approx(0.25), "b": pytest.approx(0.25), "union": pytest.approx(0.5)}


def test_concurrent_first_calls_build_each_table_once(small_features: FeatureSet) -> None:
    """Tables derived from the feature set are built on first use (the batch path's contexts),
    under a lock: threads asking a fresh context at once get one build, the same object."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from engine.candidates.sequence import transition_table
    from engine.rerank.features import rerank_tables

    threads = 16
    cell: Once[list[int]] = Once()
    builds: list[int] = []
    start = threading.Barrier(threads)

    def slow_build() -> list[int]:
        builds.append(1)
        time.sleep(0.05)  # every other thread arrives while the first still builds
        return [len(builds)]

    def first_call(_: int) -> list[int]:
        start.wait()
        return cell.get(slow_build)

    with ThreadPoolExecutor(threads) as pool:
        got = list(pool.map(first_call, range(threads)))
    assert len(builds) == 1 and all(g is got[0] for g in got)

    fresh = CandidateContext.build(small_features, CFG)
    for table in (rerank_tables, transition_table):
        start = threading.Barrier(threads)

        def ask(_: int, table=table, start=start) -> object:
            start.wait()
            return table(fresh)

        with ThreadPoolExecutor(threads) as pool:
            tables = list(pool.map(ask, range(threads)))
        assert all(t is tables[0] for t in tables), table.__name__
