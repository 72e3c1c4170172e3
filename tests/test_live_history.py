"""A user's events since the version (live items) act on a request exactly as if the
version's history had held them: every candidate source (co-visitation, content, transitions,
repeat, EASE and item-kNN, the seen-items exclusion of all of them) and every re-ranker
feature reads the longer history."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from engine.config import EngineConfig
from engine.request.candidates import candidates
from engine.request.features import feature_columns
from engine.request.tables import RequestTables, Rows
from serving import Recommender


def _appended(rows: Rows, key: int, items: list[int], *, sort: bool) -> Rows:
    """`rows` with `items` added to row `key`: at its end, or in order (`sort`)."""
    col = next(iter(rows.cols))
    lo, hi = int(rows.indptr[key]), int(rows.indptr[key + 1])
    mine = list(rows.cols[col][lo:hi]) + items
    if sort:
        mine = sorted(set(mine))
    values = np.concatenate([rows.cols[col][:lo], np.asarray(mine), rows.cols[col][hi:]])
    indptr = rows.indptr.copy()
    indptr[key + 1 :] += len(mine) - (hi - lo)
    return Rows(indptr, {col: values.astype(rows.cols[col].dtype)})


def _as_if_held(t: RequestTables, user: int, items: list[int]) -> RequestTables:
    """The tables of a version whose history of `user` ends with `items`."""
    item_item = {}
    for name, source in t.item_item.items():
        h = source.item_model.history.tolil(copy=True)
        for i in items:
            h[user, i] = 1.0
        model = dataclasses.replace(source.item_model, history=h.tocsr(), last={})
        moved = copy.copy(source)
        moved.item_model = model
        item_item[name] = moved
    return dataclasses.replace(
        t,
        history=_appended(t.history, user, items, sort=False),
        seen=_appended(t.seen, user, items, sort=True),
        item_item=item_item,
    )


@pytest.fixture(scope="module")
def tables(published: tuple[EngineConfig, Path]) -> RequestTables:
    return Recommender.load(published[1])._state.tables


def test_live_items_act_as_if_the_history_held_them(tables: RequestTables) -> None:
    t = tables
    assert t.item_item, "the small job's version has item-to-item sources"
    rng = np.random.default_rng(4)
    eligible = np.flatnonzero(t.ctx.eligible)
    checked = 0
    for user in rng.choice(np.flatnonzero(np.diff(t.history.indptr) > 0), 8, replace=False):
        seen = set(t.seen.cols["item_idx"][t.seen.indptr[user] : t.seen.indptr[user + 1]])
        fresh = [int(i) for i in rng.permutation(eligible) if i not in seen][:2]
        live = candidates(t, np.array([user]), {int(user): np.array(fresh)})
        held = candidates(_as_if_held(t, int(user), fresh), np.array([user]))
        np.testing.assert_array_equal(live.items, held.items)
        assert list(live.ranks) == list(held.ranks)
        for name in held.ranks:
            np.testing.assert_array_equal(live.ranks[name], held.ranks[name], err_msg=name)
            np.testing.assert_allclose(live.scores[name], held.scores[name], rtol=1e-6)
        f_live = feature_columns(t, live)
        f_held = feature_columns(_as_if_held(t, int(user), fresh), held)
        for name, values in f_held.items():
            np.testing.assert_allclose(f_live[name], values, rtol=1e-6, err_msg=name)
        # seen now: no source but the repeat proposes them
        for name, ranks in live.ranks.items():
            if name != "repeat":
                assert not np.isin(live.items[~np.isnan(ranks)], fresh).any(), name
        before = candidates(t, np.array([user]))
        assert not np.array_equal(before.items, live.items)  # the events changed something
        checked += 1
    assert checked == 8
