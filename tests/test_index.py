"""Item indexes: every kind the factory can build returns the exact top-k on a small set (or
meets its recall on a clustered one), never returns an excluded or disallowed item, survives a
save / load round trip, and a damaged file is refused. The GPU path is checked where faiss
sees a GPU."""

from __future__ import annotations

from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from engine.index import IndexConfig, ItemIndex, build_index, choose_kind, exact_top_k, search_all
from engine.index.faiss_device import gpu_count
from pipelines.errors import ArtifactError

KINDS = ["flat", "ivf_flat", "hnsw", "ivf_pq"]


def clustered(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(4, n // 250), d))
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def near(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Queries from the corpus's own distribution: perturbed corpus vectors."""
    rng = np.random.default_rng(seed)
    q = x[rng.integers(0, len(x), n)] + 0.3 * rng.normal(size=(n, x.shape[1]))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray]:
    """20k clustered unit vectors with item indices 1..n (0 is the OOV item)."""
    x = clustered(20_000)
    return x, np.arange(1, len(x) + 1)


@pytest.fixture(scope="module", params=KINDS)
def built(
    request: pytest.FixtureRequest, corpus: tuple[np.ndarray, np.ndarray]
) -> tuple[ItemIndex, dict]:
    x, ids = corpus
    cfg = IndexConfig(kind=request.param, recall_target=0.95, k=50, eval_queries=200, pq_m=16)
    return build_index(x, ids, cfg, queries=near(x, 500, seed=1))


def test_choice_follows_corpus_size() -> None:
    cfg = IndexConfig(exact_max=1000, pq_min=100_000)
    assert choose_kind(1000, cfg) == "flat"
    assert choose_kind(1001, cfg) == "ivf_flat"
    assert choose_kind(100_000, cfg) == "ivf_pq"
    assert choose_kind(10, IndexConfig(kind="hnsw")) == "hnsw"


def test_flat_is_exact_on_a_small_set() -> None:
    x = clustered(500, seed=1)
    idx, figures = build_index(x, np.arange(500) + 10, IndexConfig(k=20, eval_queries=50))
    assert idx.kind == "flat" and figures["recall"] == 1.0
    q = clustered(40, seed=2)
    scores, items = idx.search(q, 20)
    np.testing.assert_array_equal(items, exact_top_k(q, x, 20) + 10)
    np.testing.assert_allclose(scores, np.sort(q @ x.T, axis=1)[:, ::-1][:, :20], rtol=1e-5)


def test_each_kind_meets_its_measured_recall(
    built: tuple[ItemIndex, dict], corpus: tuple[np.ndarray, np.ndarray]
) -> None:
    idx, figures = built
    x, _ids = corpus
    floor = {"flat": 1.0, "ivf_flat": 0.95, "hnsw": 0.95, "ivf_pq": 0.6}[idx.kind]
    assert figures["recall"] >= floor, figures
    q = near(x, 100, seed=9)
    _, items = idx.search(q, 50)
    truth = exact_top_k(q, x, 50) + 1
    recall = np.mean([len(np.intersect1d(a, b)) / 50 for a, b in zip(items, truth, strict=True)])
    assert recall >= floor - 0.03, (idx.kind, recall)
    assert (np.diff(idx.search(q, 50)[0], axis=1) <= 1e-6).all(), "scores not sorted"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_filters_are_never_violated(built: tuple[ItemIndex, dict], data: st.DataObject) -> None:
    idx, _ = built
    n = idx.size
    k = data.draw(st.integers(1, 60), label="k")
    n_q = data.draw(st.integers(1, 12), label="queries")
    seed = data.draw(st.integers(0, 2**31), label="seed")
    rng = np.random.default_rng(seed)
    q = clustered(n_q, seed=seed % 1000)
    blocked_share = data.draw(st.sampled_from([0.0, 0.1, 0.9, 0.999]), label="blocked share")
    allowed = rng.random(n + 1) >= blocked_share
    exclude = [
        rng.choice(np.arange(1, n + 1), rng.integers(0, 300), replace=False) for _ in range(n_q)
    ]
    _scores, items = idx.search(q, k, exclude=exclude, allowed=allowed)
    assert items.shape == (n_q, k)
    for row, excl in zip(items, exclude, strict=True):
        got = row[row >= 0]
        assert not np.isin(got, excl).any()
        assert allowed[got].all()
        assert len(np.unique(got)) == len(got)
    if idx.kind == "flat":  # exact: a row is short only when fewer items are eligible
        for row, excl in zip(items, exclude, strict=True):
            eligible = allowed.copy()
            eligible[0] = False
            eligible[excl] = False
            assert (row >= 0).sum() == min(k, int(eligible.sum()))


def test_save_load_round_trip_and_checksum(tmp_path: Path, built: tuple[ItemIndex, dict]) -> None:
    idx, _ = built
    meta = idx.save(tmp_path)
    assert meta["kind"] == idx.kind and len(meta["sha256"]) == 64
    back = ItemIndex.load(tmp_path)
    q = clustered(20, seed=5)
    np.testing.assert_array_equal(back.search(q, 10)[1], idx.search(q, 10)[1])
    assert back.params == idx.params and back.recall == idx.recall
    data = bytearray((tmp_path / "items.faiss").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "items.faiss").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        ItemIndex.load(tmp_path)


@pytest.mark.skipif(gpu_count() == 0, reason="faiss sees no GPU on this host")
def test_gpu_index_matches_cpu(corpus: tuple[np.ndarray, np.ndarray]) -> None:
    x, ids = corpus
    gpu, _ = build_index(x, ids, IndexConfig(kind="flat", use_gpu=True))
    cpu, _ = build_index(x, ids, IndexConfig(kind="flat", use_gpu=False))
    assert gpu.on_gpu and not cpu.on_gpu
    q = clustered(64, seed=3)
    allowed = np.ones(len(x) + 1, bool)
    allowed[::3] = False
    np.testing.assert_array_equal(
        gpu.search(q, 20, allowed=allowed)[1], cpu.search(q, 20, allowed=allowed)[1]
    )


def test_batch_search_in_chunks_equals_one_search(
    built: tuple[ItemIndex, dict], corpus: tuple[np.ndarray, np.ndarray]
) -> None:
    idx, _ = built
    x, _ = corpus
    q = near(x, 50, seed=11)
    seen = [np.array([i + 1, i + 2]) for i in range(50)]
    done: list[int] = []
    chunks = list(
        search_all(
            idx, q, 10, exclude=lambda rows: [seen[r] for r in rows], chunk=16, report=done.append
        )
    )
    assert done == [16, 16, 16, 2]
    items = np.concatenate([c[2] for c in chunks])
    np.testing.assert_array_equal(items, idx.search(q, 10, exclude=seen)[1])


def test_eligibility_keeps_available_items_and_ads_in_flight() -> None:
    from datetime import datetime

    import polars as pl

    from engine.index.eligibility import eligible_items

    t = datetime(2026, 5, 1)
    items = pl.DataFrame(
        {
            "item_idx": [1, 2, 3, 4, 5, 6],
            "kind": ["product", "product", "ad", "ad", "ad", "ad"],
            "available": [True, False, True, True, True, True],
            "start_ts": [None, None, datetime(2026, 4, 1), datetime(2026, 5, 2), None, None],
            "end_ts": [None, None, datetime(2026, 6, 1), None, t, None],
        }
    )
    assert eligible_items(items, 7, at=t).tolist() == [False, True, False, True, False, False, True]
    assert np.flatnonzero(eligible_items(items, 7, at=t, kind="ad")).tolist() == [3, 6]


@pytest.mark.parametrize("mask", ["selector", "overfetch"])
def test_both_mask_mechanisms_filter_and_agree_on_exact_search(
    mask: str, corpus: tuple[np.ndarray, np.ndarray]
) -> None:
    x, ids = corpus
    idx, _ = build_index(x, ids, IndexConfig(kind="flat", k=20, eval_queries=20))
    allowed = np.random.default_rng(3).random(len(x) + 1) > 0.3
    q = near(x, 40, seed=4)
    _, items = idx.search(q, 20, allowed=allowed, mask=mask)  # type: ignore[arg-type]
    assert allowed[items].all()
    _, few = idx.search(q[:3], 20, allowed=allowed, mask=mask)  # type: ignore[arg-type]
    assert allowed[few].all()  # the numpy path for a few queries honours the mask too
    np.testing.assert_array_equal(np.sort(few, axis=1), np.sort(items[:3], axis=1))
    scores = q @ x.T
    scores[:, ~allowed[1:]] = -np.inf
    want = np.argsort(-scores, axis=1)[:, :20] + 1
    np.testing.assert_array_equal(np.sort(items, axis=1), np.sort(want, axis=1))


def test_one_query_excludes_inside_the_search_as_a_block_does_after_it(
    built: tuple[ItemIndex, dict], corpus: tuple[np.ndarray, np.ndarray]
) -> None:
    """A single query (an online request) hands its exclusions to FAISS's selector with the
    eligibility bitmap; a block of queries over-fetches and filters: each query gets the
    same items and scores either way."""
    idx, _ = built
    x, _ = corpus
    rng = np.random.default_rng(13)
    q = near(x, 40, seed=13)
    allowed = rng.random(idx.size + 1) < 0.7
    block_s, block_i = idx.search(q, 50, exclude=None, allowed=allowed)
    exclude = [
        rng.choice(block_i[r][block_i[r] >= 0], int(rng.integers(0, 30)), replace=False)
        for r in range(40)
    ]  # drop some of what each query would have found
    block_s, block_i = idx.search(q, 50, exclude=exclude, allowed=allowed)
    for r in range(40):
        one_s, one_i = idx.search(q[r : r + 1], 50, exclude=[exclude[r]], allowed=allowed)
        np.testing.assert_array_equal(one_i[0], block_i[r])
        np.testing.assert_allclose(one_s[0], block_s[r], rtol=1e-6)
        assert not np.isin(one_i[0], exclude[r]).any() and allowed[one_i[0][one_i[0] >= 0]].all()
