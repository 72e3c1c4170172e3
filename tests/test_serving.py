"""The online API over a published version: the same scores as the batch lists for the same
user and moment; unknown users and histories fall back to the anonymous path; defined edges
(k past the catalogue, unknown ids in `exclude`); clear errors for bad arguments; and
`reload()` every 50 ms under 16 threads of calls with zero errors and no mixed versions."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from engine.candidates import CandidateContext
from engine.config import EngineConfig
from engine.jobs.artifacts import current_version, switch_current
from engine.jobs.nightly import run_nightly
from engine.version import full_context
from serving import Recommender
from tests.conftest import copy_root, tally


@pytest.fixture(scope="module")
def rec(published: tuple[EngineConfig, Path]) -> Recommender:
    return Recommender.load(published[1])


@pytest.fixture(scope="module")
def full(rec: Recommender) -> CandidateContext:
    """The served version's context over its whole feature set: the frame path's."""
    st = rec._state
    return full_context(st.folder, st.cfg.candidates)


def batch_lists(root: Path) -> pl.DataFrame:
    return pl.read_parquet(current_version(root) / "recs" / "kind=product" / "*.parquet")


def test_online_scores_agree_with_the_batch(
    published: tuple[EngineConfig, Path], rec: Recommender
) -> None:
    cfg, root = published
    batch = batch_lists(root)
    users = batch["user_id"].unique().sort().head(25).to_list()
    for u in users:
        want = batch.filter(pl.col("user_id") == u).sort("rank")
        got = rec.recommend(u, k=cfg.jobs.k)
        assert [g["item_id"] for g in got] == want["item_id"].to_list()
        assert [g["score"] for g in got] == pytest.approx(want["score"].to_list(), abs=1e-9)
    frame = rec.recommend_batch(users, k=cfg.jobs.k)
    assert frame.select("user_id", "rank", "item_id").equals(
        batch.filter(pl.col("user_id").is_in(users))
        .sort("user_id", "rank")
        .select("user_id", "rank", "item_id")
    )


def test_explanations_on_request(rec: Recommender, published: tuple[EngineConfig, Path]) -> None:
    u = batch_lists(published[1])["user_id"][0]
    got = rec.recommend(u, k=3, explain=True)
    assert got and all(g["why"].startswith("sources: ") for g in got)
    assert "why" not in rec.recommend(u, k=3)[0]


def test_unknown_users_and_histories_take_the_anonymous_path(
    rec: Recommender, published: tuple[EngineConfig, Path]
) -> None:
    cfg, root = published
    products = set(
        pl.read_parquet(cfg.data.items).filter(pl.col("kind") == "product")["item_id"].to_list()
    )
    stranger = rec.recommend("no-such-user", k=5)
    assert 0 < len(stranger) <= 5 and {s["item_id"] for s in stranger} <= products
    history = batch_lists(root)["item_id"].unique().sort().head(3).to_list()
    anon = rec.recommend(history=history, user_features={"country": "de", "nope": "x"}, k=5)
    assert 0 < len(anon) <= 5 and not {a["item_id"] for a in anon} & set(history)
    assert [a["rank"] for a in anon] == list(range(1, len(anon) + 1))


def published_ads(root: Path) -> pl.DataFrame:
    return pl.read_parquet(current_version(root) / "recs" / "kind=ad" / "*.parquet")


def test_ad_lists_online_and_in_batch_are_the_published_ones(
    rec: Recommender, published: tuple[EngineConfig, Path]
) -> None:
    want = published_ads(published[1]).sort("user_id", "rank")
    users = want["user_id"].unique().sort().head(20).to_list()
    assert len(users) == 20
    for u in users:
        mine = want.filter(pl.col("user_id") == u)
        got = rec.recommend(u, k=3, kind="ad")
        assert got and [g["item_id"] for g in got] == mine["item_id"].head(3).to_list()
        assert [g["ecpm"] for g in got] == pytest.approx(mine["ecpm"].head(3).to_list())
        assert all(g["ecpm"] == pytest.approx(g["pctr"] * g["bid"] * 1000) for g in got)
    batch = rec.recommend_batch([*users, "stranger"], k=3, kind="ad")
    assert {"pctr", "bid", "ecpm"} <= set(batch.columns)
    known = batch.filter(pl.col("user_id") != "stranger").sort("user_id", "rank")
    assert known.select("user_id", "rank", "item_id").equals(
        want.filter(pl.col("user_id").is_in(users), pl.col("rank") <= 3).select(
            "user_id", "rank", "item_id"
        )
    )
    # a user without a list gets the default ads, ranked from 1
    stranger = batch.filter(pl.col("user_id") == "stranger")
    assert stranger.height > 0 and stranger["rank"].to_list() == list(range(1, stranger.height + 1))


def test_mixed_lists_keep_each_kinds_order_and_the_ad_cap(
    rec: Recommender, published: tuple[EngineConfig, Path]
) -> None:
    cfg, root = published
    users = published_ads(root)["user_id"].unique().sort().head(20).to_list()
    with_ads = 0
    for u in users:
        mixed = rec.recommend(u, k=8, kind="mixed")
        products = [m["item_id"] for m in mixed if m["kind"] == "product"]
        ads = [m["item_id"] for m in mixed if m["kind"] == "ad"]
        assert len(mixed) == 8 and [m["rank"] for m in mixed] == list(range(1, 9))
        # each kind keeps its own list's order: the products' head and the ads' head
        assert products == [p["item_id"] for p in rec.recommend(u, k=8)][: len(products)]
        own_ads = [a["item_id"] for a in rec.recommend(u, k=cfg.rules.max_ads_in_list, kind="ad")]
        assert ads == own_ads[: len(ads)]
        assert len(ads) <= cfg.rules.max_ads_in_list
        with_ads += bool(ads)
    assert with_ads > 0  # ads do win slots


def test_edges(rec: Recommender, published: tuple[EngineConfig, Path]) -> None:
    u = batch_lists(published[1])["user_id"][0]
    huge = rec.recommend(u, k=100_000)
    ids = [h["item_id"] for h in huge]
    assert len(ids) == len(set(ids)) and all(isinstance(i, str) for i in ids)
    first = ids[0]
    without = rec.recommend(u, k=5, exclude=[first, "not-an-item"])
    assert first not in [w["item_id"] for w in without] and len(without) == 5
    ads = rec.recommend(u, k=3, kind="ad")
    assert ads and all({"pctr", "bid", "ecpm"} <= set(a) for a in ads)
    mixed = rec.recommend(u, k=6, kind="mixed")
    assert len(mixed) == 6 and all(m["kind"] in ("product", "ad") for m in mixed)
    strangers = rec.recommend_batch(["stranger-1", u, "stranger-2"], k=3)
    assert strangers["user_id"].unique(maintain_order=True).to_list() == [
        "stranger-1",
        u,
        "stranger-2",
    ]
    assert strangers.group_by("user_id").len()["len"].max() <= 3
    similar = rec.similar_items(first, 4)
    assert len(similar) == 4 and first not in [s["item_id"] for s in similar]
    assert rec.similar_items("not-an-item", 4) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"user_id": "1", "k": 0},
        {"user_id": "1", "k": -3},
        {"user_id": "1", "k": "10"},
        {"user_id": "1", "k": True},
        {"user_id": "1", "kind": "video"},
        {},
    ],
)
def test_bad_arguments_raise_value_error(rec: Recommender, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        rec.recommend(**kwargs)


RELOAD_EVERY_S, RELOADS, THREADS = 0.05, 200, 16


def test_reload_every_50ms_under_16_threads_mixes_no_versions(
    published: tuple[EngineConfig, Path], tmp_path: Path
) -> None:
    """16 threads call `recommend()` while `current` flips between two versions and
    `reload()` runs every 50 ms for 10 s: no call fails, and every answer is exactly the one
    that one of the two versions gives alone (an old index with a new re-ranker, or one
    version's products with the other's ads, would match neither). The first swap loads and
    verifies the other version while the calls run; later ones reuse the two kept states."""
    cfg = published[0]
    root = copy_root(published[1], tmp_path / "artifacts")
    first = current_version(root)
    other = cfg.model_copy(
        update={  # other models: another seed and tower width
            "train": cfg.train.model_copy(update={"seed": 1}),
            "model": cfg.model.model_copy(update={"hidden": (24,)}),
        }
    )
    second = run_nightly(other, root, force=True).version
    assert first is not None and second is not None and first != second
    users = batch_lists(root)["user_id"].unique().sort().head(40).to_list()
    kinds = ("product", "mixed")
    want = {
        v.name: {
            (u, kind): Recommender.load(v).recommend(u, k=10, kind=kind)
            for u in users
            for kind in kinds
        }
        for v in (first, second)
    }
    differ = [key for key in want[first.name] if want[first.name][key] != want[second.name][key]]
    assert len(differ) >= 0.8 * len(want[first.name])  # the answers tell the versions apart
    rec = Recommender.load(root)
    errors: list[BaseException] = []
    answers: list[tuple[tuple[str, str], list[dict[str, object]]]] = []
    stop = threading.Event()

    def caller(n: int) -> None:
        mine = [differ[(n + i) % len(differ)] for i in range(len(differ))]
        while not stop.is_set():
            for u, kind in mine:
                if stop.is_set():
                    return
                try:
                    answers.append(((u, kind), rec.recommend(u, k=10, kind=kind)))
                except BaseException as exc:
                    errors.append(exc)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    swaps = 0
    t0 = time.monotonic()
    try:
        for n in range(1, RELOADS + 1):  # on a 50 ms grid: 10 s, longer if a reload is late
            time.sleep(max(0.0, t0 + n * RELOAD_EVERY_S - time.monotonic()))
            switch_current(root, second if current_version(root) == first else first)
            swaps += rec.reload()
    finally:
        stop.set()
        for t in threads:
            t.join()
    served = Counter()
    for key, got in answers:
        served[next((v for v in want if want[v][key] == got), "neither")] += 1
    tally("serving: recommend() calls under reload", len(answers))
    tally("serving: reload() calls", RELOADS)
    tally("serving: errors and mixed answers", len(errors) + served["neither"])
    assert not errors, errors[0]
    assert served["neither"] == 0
    assert served[first.name] > 0 and served[second.name] > 0
    assert swaps == RELOADS  # every reload found the other version and swapped it in
    assert time.monotonic() - t0 <= 1.5 * RELOADS * RELOAD_EVERY_S  # it kept to the grid


def test_filters_keep_only_matching_items(
    rec: Recommender, published: tuple[EngineConfig, Path]
) -> None:
    cfg, root = published
    items = pl.read_parquet(cfg.data.items).with_columns(pl.col("item_id").cast(pl.String))
    top = (
        items.filter(pl.col("kind") == "product")["category"].str.split(">").list.first().mode()[0]
    )
    price = float(items["price"].median())
    u = batch_lists(root)["user_id"][0]
    for got in (
        rec.recommend(u, k=10, filters={"category": top, "max_price": price}),
        rec.recommend(history=[], k=10, filters={"category": top, "max_price": price}),
    ):
        assert got
        chosen = items.filter(pl.col("item_id").is_in([g["item_id"] for g in got]))
        assert chosen.height == len(got)
        assert chosen["category"].str.starts_with(top).all() and (chosen["price"] <= price).all()
    assert rec.recommend(u, k=10, filters={"brand": "no-such-brand"}) == []
    with pytest.raises(ValueError, match="unknown filter"):
        rec.recommend(u, filters={"colour": "red"})
    with pytest.raises(ValueError, match="number"):
        rec.recommend(u, filters={"max_price": "cheap"})


def test_kept_versions_swap_back_without_loading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`keep=2`: a rollback to the previous version swaps its kept state back in; a third
    version lets the oldest go before it loads. `keep=1` loads at every change."""
    from serving import recommender

    loads: list[str] = []
    held: list[int] = []  # states kept while each load ran
    recs: list[Recommender] = []

    class Fake:
        def __init__(self, folder: Path) -> None:
            self.folder = folder
            loads.append(folder.name)
            held.append(len(recs[-1]._loaded) if recs else 0)

    monkeypatch.setattr(recommender.VersionState, "load", classmethod(lambda cls, f: Fake(f)))
    live = [tmp_path / "a"]
    monkeypatch.setattr(recommender, "resolve", lambda root: live[0])
    for keep, want in ((2, ["a", "b", "c", "b"]), (1, ["a", "b", "a", "c", "b"])):
        loads.clear()
        recs.clear()
        rec = Recommender.load(tmp_path, keep=keep)
        recs.append(rec)
        held.clear()
        for name in ("b", "a", "c", "b"):
            live[0] = tmp_path / name
            assert rec.reload() and rec.version == name
        assert loads == want, (keep, loads)
        assert max(held) == 1  # only the live state is held while another loads: peak two
        live[0] = tmp_path / "a"
    with pytest.raises(ValueError, match="keep"):
        Recommender.load(tmp_path, keep=0)


def test_array_path_builds_the_frame_paths_candidates_and_features(
    rec: Recommender, full: CandidateContext
) -> None:
    """The request path's arrays give, for sampled users (some without a history), one at a
    time and as one block, the candidates, sources and re-ranker features the frame path (the
    training reference) builds: the same items, and every feature within 1e-9."""
    import numpy as np

    from engine.candidates import default_sources, generate_candidates
    from engine.request.lists import score_users
    from engine.rerank.features import feature_frame
    from engine.rerank.ranker import feature_matrix

    st = rec._state
    rng = np.random.default_rng(7)
    histories = full.fs.history.filter(pl.col("history").list.len() > 0)["user_idx"].to_numpy()
    cold = np.setdiff1d(np.arange(1, full.fs.vocabs.user.size), histories)
    assert len(cold) >= 5
    users = np.sort(np.r_[rng.choice(histories, 40, replace=False), cold[:5]])
    blocks = [np.array([u]) for u in users[::3]] + [users]
    sources = default_sources(full)
    for block in blocks:
        frame = feature_frame(generate_candidates(sources, block), full).sort(
            "user_idx", "item_idx"
        )
        c = score_users(st.tables, st.booster, st.names, block)
        np.testing.assert_array_equal(block[c.row], frame["user_idx"].to_numpy())
        np.testing.assert_array_equal(c.items, frame["item_idx"].to_numpy())
        assert c.sources(list(range(len(c.items)))) == frame["sources"].to_list()
        want = feature_matrix(frame, st.names)
        np.testing.assert_array_equal(np.isnan(c.x), np.isnan(want))
        np.testing.assert_allclose(np.nan_to_num(c.x), np.nan_to_num(want), rtol=0, atol=1e-9)
    assert len(c.items) > 40 * 50


@pytest.mark.parametrize("block_users", [250, 7])
def test_array_lists_equal_the_frame_lists(
    rec: Recommender, full: CandidateContext, block_users: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Users listed by `ListScorer` (what the nightly, the batch and the evaluation use), in
    one block or in many scored on threads: the rows, scores, sources, rules and
    explanations of the frame path's own composition (`feature_frame` -> `score_frame` ->
    `product_lists` -> `with_explanations`), by a scorer built from the sources and by the
    served version's (stored tables)."""
    import numpy as np

    from engine.candidates import default_sources, generate_candidates
    from engine.rerank.features import feature_frame
    from engine.rerank.lists import product_lists, with_explanations
    from engine.rerank.ranker import early_exit_for, score_frame
    from engine.scoring import ListScorer

    monkeypatch.setattr("engine.scoring.BLOCK_USERS", block_users)
    st = rec._state
    built = ListScorer.build(full, st.booster, st.cfg.rules, st.cfg.rerank)
    users = np.arange(1, 120, dtype=np.int64)
    exclude = {int(u): set(range(int(u) % 7, 300, 7)) for u in users[::2]}
    frame = feature_frame(generate_candidates(default_sources(full), users), full)
    scores = score_frame(st.booster, frame, st.names, early_exit_for(st.cfg.rerank, 10))
    lists = product_lists(frame, scores, st.facts, k=10, rules=st.cfg.rules, exclude=exclude)
    for explain in (False, True):
        want = (
            with_explanations(
                lists, frame, st.booster, st.names, shap_trees=st.cfg.rerank.explain_shap_trees
            )
            if explain
            else lists
        )
        keys = ["user_idx", "rank"]
        for scorer in (built, st.scorer):
            got = scorer.lists(users, k=10, exclude=exclude, explain=explain)
            assert got.height == want.height > 100 * 5
            assert got.drop("score").sort(keys).equals(want.drop("score").sort(keys))
            np.testing.assert_allclose(
                got.sort(keys)["score"], want.sort(keys)["score"], rtol=0, atol=1e-9
            )


def test_plain_lists_cut_over_arrays_are_the_rules_walk(rec: Recommender) -> None:
    """`cut_lists` (the nightly's lists: no caps, no MMR, nothing excluded, no explanations)
    gives the rows, sources and rules notes the per-user rules walk gives, with some
    candidates ineligible (dropped from the shortlist, and counted in the notes)."""
    import dataclasses

    import numpy as np

    from engine.request.lists import cut_lists, rule_users

    st = rec._state
    users = np.arange(1, 150, dtype=np.int64)
    scored = st.scorer.scored(users, k=10)
    some_out = st.facts.eligible.copy()
    some_out[np.unique(scored.items)[::9]] = False
    for facts in (st.facts, dataclasses.replace(st.facts, eligible=some_out)):
        for k in (10, 20):
            want = rule_users(scored, st.booster, st.names, facts, st.cfg.rules, k=k).frame()
            got = cut_lists(scored, facts, k=k)
            assert got.height > 100 * min(k, 10)
            assert got.equals(want)
    assert got["rules"].str.contains("not eligible").any()


def test_stored_request_tables_are_what_the_sources_build(
    rec: Recommender, full: CandidateContext
) -> None:
    """A served version maps the request tables the nightly stored instead of building
    them from its candidate sources at load: every array is the one a build gives, and it
    is a map of the version's file (processes serving one version share its pages)."""
    import numpy as np

    from engine.candidates import default_sources
    from engine.request import RequestTables
    from engine.request.tables import Lookup, Rows

    st = rec._state
    sources = default_sources(full)
    built = RequestTables.build(full, sources)
    got = st.tables
    assert got.names == built.names == [s.name for s in sources]
    assert set(got.item_item) == set(built.item_item) == {"ease", "knn"}
    assert got.key_width == built.key_width and got.counts == built.counts

    def arrays(t: RequestTables) -> dict[str, np.ndarray]:
        out = {}
        for name, value in vars(t).items():
            if isinstance(value, Rows):
                out |= {
                    f"{name}.indptr": value.indptr,
                    **{f"{name}.{c}": a for c, a in value.cols.items()},
                }
            elif isinstance(value, Lookup):
                out |= {
                    f"{name}.pairs": value.pairs,
                    **{f"{name}.{c}": a for c, a in value.cols.items()},
                }
            elif name in ("items", "user_stats"):
                out |= {f"{name}.{c}": a for c, a in value.items()}
        out["cold_warm"] = t.cold_warm
        out["cold_overall.items"], out["cold_overall.share"] = t.cold_overall
        return out

    want, have = arrays(built), arrays(got)
    assert set(have) == set(want) and len(want) > 40
    for name, array in want.items():
        assert have[name].dtype == array.dtype, name
        if array.dtype.kind == "f":  # a build's parallel sums may differ in the last bit
            np.testing.assert_allclose(have[name], array, rtol=1e-12, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(have[name], array, err_msg=name)
    assert isinstance(got.history.indptr.base, np.memmap)
    assert isinstance(got.user_stats["user_events"].base, np.memmap)


def test_stored_item_item_models_are_what_a_fit_gives(
    rec: Recommender, full: CandidateContext
) -> None:
    """A served version reads the item-to-item weights the nightly stored (memory-mapped)
    instead of fitting them again: they must be the fit's."""
    import numpy as np

    from engine.candidates.collaborative import ease_model, knn_model
    from engine.candidates.itemitem import ItemItem

    st = rec._state
    fresh = CandidateContext.build(full.fs, st.cfg.candidates)
    for name, model in (("knn", knn_model), ("ease", ease_model)):
        stored = st.ctx.cache.item_item(name).built
        assert isinstance(stored, ItemItem)
        fitted = model(fresh)
        if name == "knn":
            assert (stored.weights != fitted.weights).nnz == 0
        else:
            assert isinstance(stored.weights.base, np.memmap)  # mapped, not read in
            np.testing.assert_array_equal(stored.weights, fitted.weights)


def test_a_served_version_maps_its_items_and_reads_no_other_frame(
    rec: Recommender, full: CandidateContext
) -> None:
    """A served version reads the item table the nightly stored as Arrow (mapped, the same
    rows and types as the feature set's) and none of the frames its tables were built from."""
    st = rec._state
    assert st.fs.items.equals(full.fs.items) and st.fs.items.height > 100
    for name in ("interactions", "history", "popularity", "affinity", "users"):
        frame, whole = getattr(st.fs, name), getattr(full.fs, name)
        assert frame.height == 0 < whole.height and frame.schema == whole.schema, name


def served_caches(rec: Recommender) -> dict[str, object]:
    """What a served version holds that is built on first use: the context's derived tables
    and lookups, and the booster's tree ranges and explanation tables."""
    from dataclasses import fields

    import lightgbm as lgb

    from engine.candidates.context import DerivedTables
    from engine.rerank import explain, trees

    st = rec._state
    ctx = st.ctx
    out: dict[str, object] = {
        f"ctx.cache.{f.name}": getattr(ctx.cache, f.name).built is not None
        for f in fields(DerivedTables)
    }
    out |= {f"ctx.{p}": p in vars(ctx) for p in ("eligible_items", "_history", "_seen")}
    if isinstance(st.booster, lgb.Booster):
        out["tree ranges"] = set(trees._ranges.get(st.booster, {}))
        out["path tables"] = set(explain._tables.get(st.booster, {}))
    return out


def test_a_served_version_builds_what_requests_read_when_it_loads(
    published: tuple[EngineConfig, Path],
) -> None:
    """A loaded version is immutable: every table and tree range a request reads is built by
    `VersionState.load`, so requests of every kind, concurrent first ones included, read
    and never fill one in."""
    cfg, root = published
    rec = Recommender.load(root)  # a fresh version, not one earlier tests warmed
    loaded = served_caches(rec)
    assert loaded["ctx.cache.knn"] and loaded["ctx.cache.user_items"]
    users = batch_lists(root)["user_id"].unique().sort().head(3).to_list()
    items = batch_lists(root)["item_id"].unique().sort().head(3).to_list()
    for u in users:
        for kind in ("product", "ad", "mixed"):
            rec.recommend(u, k=cfg.jobs.k, kind=kind)
        rec.recommend(u, k=5, explain=True)
        rec.recommend(u, k=5, exclude=items, filters={"max_price": 1e9, "brand": ["none"]})
    rec.recommend(history=items, user_features={"country": "de"}, k=5)
    rec.recommend("no-such-user", k=5)
    rec.recommend_batch([*users, "stranger"], k=5)
    rec.recommend_batch([*users, "stranger"], k=5, kind="ad")
    rec.similar_items(items[0], 4)
    assert served_caches(rec) == loaded
