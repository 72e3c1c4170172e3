"""Compiled loops of the request path: the steps that numpy can only express as a dozen calls
over a few hundred rows (a filter, three sorts and a cut; a grouped sum; a search per row),
each one call here. A request's cost was the fixed price of ~2,400 small numpy calls, not its
rows; these kernels give the same values (the same float sums in the same order, the same
tie rules) for one user's rows or a block's.

Compiled once (`cache=True` keeps the machine code beside the module) and run without the GIL,
so the nightly's blocks of users score on a thread per core. Every kernel takes int64 keys
and float64 values: one signature each, compiled once.
"""

from __future__ import annotations

import numba
import numpy as np

jit = numba.njit(cache=True, nogil=True)


@jit
def gather(indptr: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, owner) of every CSR row of each of `keys` in turn (keys outside the rows
    have none); `owner[j]` is the index into `keys` of the row position `j` came from."""
    n_keys = len(indptr) - 1
    total = 0
    for k in keys:
        if 0 <= k < n_keys:
            total += indptr[k + 1] - indptr[k]
    pos = np.empty(total, np.int64)
    owner = np.empty(total, np.int64)
    j = 0
    for i in range(len(keys)):
        k = keys[i]
        if 0 <= k < n_keys:
            for p in range(indptr[k], indptr[k + 1]):
                pos[j] = p
                owner[j] = i
                j += 1
    return pos, owner


@jit
def find(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Position of each query in `sorted_keys`, -1 where it is absent."""
    out = np.full(len(queries), -1, np.int64)
    n = len(sorted_keys)
    if n == 0:
        return out
    for i in range(len(queries)):
        at = np.searchsorted(sorted_keys, queries[i])
        if at < n and sorted_keys[at] == queries[i]:
            out[i] = at
    return out


def take_found(values: np.ndarray, at: np.ndarray, missing: float) -> np.ndarray:
    """`values[at]` where a search found the key (`at >= 0`), `missing` where it did not."""
    if not len(values):
        return np.full(len(at), missing, values.dtype)
    return np.where(at >= 0, values[np.maximum(at, 0)], missing)


@jit
def find_pairs(pairs: np.ndarray, width: int, users: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Position of each (users[r], keys[r]) pair in sorted `pairs` (user * width + key), -1
    where there is none or the key is outside 0..width-1. Each run of one user searches only
    that user's few pairs (the table holds every user's)."""
    out = np.full(len(keys), -1, np.int64)
    lo, hi, current = 0, 0, -1
    for i in range(len(keys)):
        k = keys[i]
        if k < 0 or k >= width:
            continue
        u = users[i]
        if u != current:
            current = u
            lo = np.searchsorted(pairs, u * width)
            hi = np.searchsorted(pairs, (u + 1) * width)
        if lo == hi:
            continue
        q = u * width + k
        at = lo + np.searchsorted(pairs[lo:hi], q)
        if at < hi and pairs[at] == q:
            out[i] = at
    return out


@jit
def group(keys: np.ndarray, values: np.ndarray, take_max: bool) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique keys, the sum of each key's values added in input order, or their
    max): what `np.unique` + `np.bincount` (or `np.maximum.at`) give."""
    order = np.argsort(keys, kind="mergesort")
    uniq = np.empty(len(keys), np.int64)
    out = np.empty(len(keys), np.float64)
    m = -1
    for j in order:
        k, v = keys[j], values[j]
        if m < 0 or uniq[m] != k:
            m += 1
            uniq[m] = k
            out[m] = -np.inf if take_max else 0.0
        if take_max:
            acc = out[m]
            if not np.isnan(acc) and (v > acc or np.isnan(v)):  # NaN wins, as np.maximum
                out[m] = v
        else:
            out[m] += v
    return uniq[: m + 1], out[: m + 1]


@jit
def _by_score(item: np.ndarray, score: np.ndarray, a: int, b: int, n: int) -> np.ndarray:
    """The first `n` (or more) of positions a..b-1 ordered by score descending (NaN last),
    ties to the lower item, as `np.lexsort((item, -score))` orders them; sorts only what is
    out of that order (a grouped score's rows come by item, an index's by score), and of
    many rows only those at or above the n-th best score."""
    seg = np.arange(a, b)
    ordered = True
    for p in range(a + 1, b):
        if (
            np.isnan(score[p])
            or score[p] > score[p - 1]
            or (score[p] == score[p - 1] and item[p] < item[p - 1])
        ):
            ordered = False
            break
    if ordered and (b == a or not np.isnan(score[a])):
        return seg
    if 0 < n < (b - a) // 2:
        finite = seg[~np.isnan(score[a:b])]
        if len(finite) > n:
            cut = -np.partition(-score[finite], n - 1)[n - 1]
            seg = finite[score[finite] >= cut]  # ties at the cut all stay
    for p in range(1, len(seg)):
        if item[seg[p]] < item[seg[p - 1]]:
            seg = seg[np.argsort(item[seg], kind="mergesort")]
            break
    return seg[np.argsort(-score[seg], kind="mergesort")]


@jit
def best(
    row: np.ndarray,
    item: np.ndarray,
    score: np.ndarray,
    eligible: np.ndarray,
    seen: np.ndarray,
    n: int,
    drop_seen: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's best `n` (row, item, score) by score, ties to the lower item, keeping only
    eligible items and (with `drop_seen`) items whose `row * n_items + item` key is not in
    sorted `seen`; sorted by row, then rank."""
    n_items = len(eligible)
    keep = np.empty(len(item), np.int64)
    kept = 0
    n_seen = len(seen)
    for j in range(len(item)):
        it = item[j]
        if it < 0 or it >= n_items or not eligible[it]:
            continue
        if drop_seen and n_seen:
            key = row[j] * n_items + it
            at = np.searchsorted(seen, key)
            if at < n_seen and seen[at] == key:
                continue
        keep[kept] = j
        kept += 1
    keep = keep[:kept]
    for p in range(1, kept):
        if row[keep[p]] < row[keep[p - 1]]:
            keep = keep[np.argsort(row[keep], kind="mergesort")]
            break
    r, i, s = row[keep], item[keep], score[keep]
    out = np.empty(kept, np.int64)
    m, a = 0, 0
    while a < kept:
        b = a + 1
        while b < kept and r[b] == r[a]:
            b += 1
        order = _by_score(i, s, a, b, n)
        for p in range(min(n, b - a)):
            out[m] = order[p]
            m += 1
        a = b
    top = out[:m]
    return r[top], i[top], s[top]


@jit
def merge(
    row: np.ndarray,
    item: np.ndarray,
    score: np.ndarray,
    source: np.ndarray,
    n_sources: int,
    n_items: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sources' candidate rows (each source's rows sorted by row, then rank; sources in
    order) merged by (row, item): (sorted unique `row * n_items + item` keys, (sources,
    keys) scores and ranks, NaN where a source did not propose the item). A source that
    proposes an item twice keeps its first row. A row's rank is its place among its source's
    rows of the same user, from 1."""
    rank = np.empty(len(row), np.float64)
    start = 0
    for j in range(len(row)):
        if j == 0 or source[j] != source[j - 1] or row[j] != row[j - 1]:
            start = j
        rank[j] = j - start + 1
    keys = row * n_items + item
    order = np.argsort(keys, kind="mergesort")
    uniq = np.empty(len(keys), np.int64)
    m = -1
    for j in order:
        if m < 0 or uniq[m] != keys[j]:
            m += 1
            uniq[m] = keys[j]
    uniq = uniq[: m + 1]
    scores = np.full((n_sources, m + 1), np.nan)
    ranks = np.full((n_sources, m + 1), np.nan)
    g = -1
    for p in range(len(order)):
        j = order[p]
        if p == 0 or keys[j] != keys[order[p - 1]]:
            g += 1
        src = source[j]
        if ranks[src, g] != ranks[src, g]:  # the source's first row of the item
            scores[src, g] = score[j]
            ranks[src, g] = rank[j]
    return uniq, scores, ranks


@jit
def by_row(row: np.ndarray, order: np.ndarray) -> np.ndarray:
    """`order` stably regrouped by `row` (small non-negative ints): a counting sort, so that
    one plain sort by value and this give what `np.lexsort((v, row))` gives."""
    n_rows = 0
    for r in row:
        n_rows = max(n_rows, r + 1)
    start = np.zeros(n_rows + 1, np.int64)
    for r in row:
        start[r + 1] += 1
    for r in range(n_rows):
        start[r + 1] += start[r]
    out = np.empty(len(order), np.int64)
    for j in order:
        out[start[row[j]]] = j
        start[row[j]] += 1
    return out


@jit
def ranks_from_order(row: np.ndarray, v: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Polars' rank("min", descending=True) within each run of equal `row`, from `order`:
    the rows by (row, v ascending, NaN last), as numpy's sorts give it (they are faster
    than a compiled sort here). A row's rank is 1 + how many values of its run are larger
    (NaN the largest, NaNs equal)."""
    out = np.empty(len(v), np.float64)
    end = len(order)
    larger = 0
    for p in range(len(order) - 1, -1, -1):
        j = order[p]
        if p == len(order) - 1 or row[j] != row[order[p + 1]]:
            end, larger = p + 1, 0  # the last row of a new run
        else:
            a, b = v[j], v[order[p + 1]]
            if not (a == b or (np.isnan(a) and np.isnan(b))):
                larger = end - 1 - p
        out[j] = larger + 1
    return out


@jit
def run_bounds(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of equal values of `a` (rows grouped by user)."""
    n_runs = 1 if len(a) else 0
    for j in range(1, len(a)):
        if a[j] != a[j - 1]:
            n_runs += 1
    starts = np.empty(n_runs, np.int64)
    ends = np.empty(n_runs, np.int64)
    m = 0
    for j in range(len(a)):
        if j == 0 or a[j] != a[j - 1]:
            if m:
                ends[m - 1] = j
            starts[m] = j
            m += 1
    if m:
        ends[m - 1] = len(a)
    return starts, ends


@jit
def run_places(a: np.ndarray) -> np.ndarray:
    """Each element's place (from 0) within its run of equal values of `a`."""
    out = np.empty(len(a), np.int64)
    start = 0
    for j in range(len(a)):
        if j and a[j] != a[j - 1]:
            start = j
        out[j] = j - start
    return out
