"""Why an item is in a list: the re-ranker's largest feature contributions. `lists.
with_explanations` adds the candidate sources and the rules that acted.

Each row's contributions plus the bias (the model's expected score) sum to the row's raw score
exactly, but they are not computed with TreeSHAP (LightGBM's `pred_contrib`) over the whole
model by default. TreeSHAP costs about leaves x depth^2 per tree and row, against depth for a
prediction: on a re-ranker of ~700 trees of 63 leaves (depth ~14), explaining the 20 listed rows
of a user took 7-10 times as long as scoring all of that user's ~400 candidates, and the nightly
lists spent most of their time in it. TreeSHAP over only the first trees does not fix it (the
first 100 trees alone still cost about as much as the scoring).

Instead every tree is explained by its decision path (Saabas' attribution): a row's path from
the root to its leaf changes the tree's expected output (the count-weighted mean of the leaves
under a node) at each split, and each change goes to the split's feature. The changes of one
tree add up to its leaf value minus its root's expected value, so over all trees the
contributions plus the sum of the roots' expected values (the same bias TreeSHAP reports) give
the raw score. The cost is one leaf lookup per tree and row (a prediction of the listed rows,
1/20 of the candidates scored) and a sparse product with a table built once per model, so it
stays a small share of the scoring whatever the number and size of the trees. For depth-1
trees the path attribution is TreeSHAP; for deeper ones it favours features split near the
leaves a little more, yet names the same leading feature as whole-model TreeSHAP for ~90% of
rows (`bench/bench_explain.py`: explaining ~6% of scoring + explaining, against ~87%).

`[rerank] explain_shap_trees` explains the first trees with TreeSHAP after all (0, the
default: none; at least the model's tree count: TreeSHAP everywhere, as before), for small
models or where exact Shapley values matter more than the time.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import polars as pl
import scipy.sparse as sp

from engine.rerank.config import RerankConfig
from engine.rerank.ranker import feature_matrix
from engine.rerank.trees import model_trees, predict_range, tree_range

SHAP_TREES: int = RerankConfig.model_fields["explain_shap_trees"].default
ROW_BLOCK = 4096
"""Rows explained at a time by the path attribution (bounds the leaf matrices' memory)."""


@dataclass(frozen=True)
class PathTable:
    """Path attribution of a range of trees: row `leaf_offset[t] + j` of `table` holds what
    the path to leaf j of the range's tree t adds to each feature; `bias` is the sum of the
    trees' expected outputs."""

    table: sp.csr_matrix  # (leaves of all trees, F)
    leaf_offset: np.ndarray  # (trees,) int64
    bias: float


_tables: weakref.WeakKeyDictionary[lgb.Booster, dict[tuple[int, int], PathTable]] = (
    weakref.WeakKeyDictionary()
)


def _tree_fields(block: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in block.splitlines() if "=" in line)


def path_table(booster: lgb.Booster, start: int, stop: int) -> PathTable:
    """The path attribution of trees [start, stop) (built once per model and range, from the
    text model: leaf values, children, split features and the training rows per node)."""
    cached = _tables.setdefault(booster, {})
    if (start, stop) in cached:
        return cached[(start, stop)]
    text = booster.model_to_string(start_iteration=start, num_iteration=stop - start)
    blocks = text.split("end of trees", 1)[0].split("\nTree=")[1:]
    n_features = booster.num_feature()
    rows, cols, vals, offsets, bias, n_leaves = [], [], [], [], 0.0, 0
    for block in blocks:
        f = _tree_fields(block)
        leaf_value = np.array(f["leaf_value"].split(), np.float64)
        nl = len(leaf_value)
        offsets.append(n_leaves)
        if nl == 1:  # a tree without splits: a constant, all bias
            bias += float(leaf_value[0])
            n_leaves += 1
            continue
        ni = nl - 1
        # node ids: internal nodes 0..ni-1, leaf j is ni + j; LightGBM's children are ~leaf
        left = np.array(f["left_child"].split(), np.int64)
        right = np.array(f["right_child"].split(), np.int64)
        left, right = np.where(left < 0, ni + ~left, left), np.where(right < 0, ni + ~right, right)
        split = np.array(f["split_feature"].split(), np.int64)
        count = np.r_[
            np.array(f["internal_count"].split(), np.float64),
            np.array(f["leaf_count"].split(), np.float64),
        ]
        expect = np.r_[np.zeros(ni), leaf_value]
        for i in range(ni - 1, -1, -1):  # a child's id is above its parent's: bottom-up
            c = count[left[i]] + count[right[i]]
            expect[i] = (
                (expect[left[i]] * count[left[i]] + expect[right[i]] * count[right[i]]) / c
                if c > 0
                else (expect[left[i]] + expect[right[i]]) / 2
            )
        parent = np.full(ni + nl, -1, np.int64)
        parent[left], parent[right] = np.arange(ni), np.arange(ni)
        bias += float(expect[0])
        node, leaf = np.arange(ni, ni + nl), np.arange(nl)
        while len(node):  # every leaf walks up to the root together
            up = parent[node]
            rows.append(n_leaves + leaf)
            cols.append(split[up])
            vals.append(expect[node] - expect[up])
            node, leaf = up[up > 0], leaf[up > 0]
        n_leaves += nl
    table = sp.csr_matrix(
        (
            np.concatenate(vals) if vals else np.empty(0),
            (
                np.concatenate(rows) if rows else np.empty(0, np.int64),
                np.concatenate(cols) if cols else np.empty(0, np.int64),
            ),
        ),
        shape=(n_leaves, n_features),
    )  # repeated (leaf, feature) pairs add up
    out = PathTable(table, np.asarray(offsets, np.int64), bias)
    cached[(start, stop)] = out
    return out


def path_contributions(booster: lgb.Booster, x: np.ndarray, start: int, stop: int) -> np.ndarray:
    """(N, F + 1) path attributions of trees [start, stop) and their bias; each row sums to
    those trees' part of the raw score."""
    pt = path_table(booster, start, stop)
    n_leaves = pt.table.shape[0]
    out = np.zeros((len(x), pt.table.shape[1] + 1))
    for a in range(0, len(x), ROW_BLOCK):
        leaf = predict_range(booster, x[a : a + ROW_BLOCK], start, stop, pred_leaf=True)
        leaf = leaf.reshape(len(x[a : a + ROW_BLOCK]), -1).astype(np.int64) + pt.leaf_offset
        n, trees = leaf.shape
        onehot = sp.csr_matrix(
            (np.ones(n * trees), leaf.ravel(), np.arange(0, n * trees + 1, trees)),
            shape=(n, n_leaves),
        )
        out[a : a + n, :-1] = (onehot @ pt.table).toarray()
    out[:, -1] = pt.bias
    return out


def contributions(
    booster: lgb.Booster, x: np.ndarray, *, shap_trees: int = SHAP_TREES
) -> np.ndarray:
    """(N, F + 1) per-feature contributions and the bias; each row sums to the raw score (of
    the trees the lists score with). The first `shap_trees` trees are explained by TreeSHAP,
    the others by their decision paths (see the module's docstring)."""
    total = model_trees(booster)
    shap = min(shap_trees, total)
    if len(x) == 0:
        return np.zeros((0, booster.num_feature() + 1))
    out = (
        predict_range(booster, x, 0, shap, pred_contrib=True)
        if shap
        else np.zeros((len(x), booster.num_feature() + 1))
    )
    if shap < total:
        out += path_contributions(booster, x, shap, total)
    return out


def warm_explanations(booster: lgb.Booster, *, shap_trees: int = SHAP_TREES) -> None:
    """Build the tree ranges and path table `contributions` reads, so that no request does."""
    total = model_trees(booster)
    shap = min(shap_trees, total)
    if shap:
        tree_range(booster, 0, shap)
    if shap < total:
        tree_range(booster, shap, total)
        path_table(booster, shap, total)


def contribution_texts(
    booster: lgb.Booster,
    frame: pl.DataFrame,
    names: list[str],
    *,
    top: int = 3,
    shap_trees: int = SHAP_TREES,
) -> list[str]:
    """One text per row of `frame`: "two_tower +0.41, count_7d +0.12, price_ratio -0.05"
    (the `top` contributions by size)."""
    if frame.height == 0:
        return []
    return matrix_texts(
        booster, feature_matrix(frame, names), names, top=top, shap_trees=shap_trees
    )


def matrix_texts(
    booster: lgb.Booster,
    x: np.ndarray,
    names: list[str],
    *,
    top: int = 3,
    shap_trees: int = SHAP_TREES,
) -> list[str]:
    """`contribution_texts` of the rows of a feature matrix."""
    if len(x) == 0:
        return []
    contrib = contributions(booster, x, shap_trees=shap_trees)[:, :-1]
    order = np.argsort(-np.abs(contrib), axis=1)[:, :top]
    return [
        ", ".join(f"{names[j]} {contrib[r, j]:+.3f}" for j in idx) for r, idx in enumerate(order)
    ]
