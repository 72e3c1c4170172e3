"""Request filters: which items a caller allows, as a mask by item index.

Keys: `category` (a category name or path prefix, "electronics" or "electronics>premium"),
`brand` (a name or a list of names), `min_price`, `max_price`. Any other key is an error; a
value the catalogue does not know matches nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import polars as pl

from pipelines.dataset import FeatureSet

KEYS = ("category", "brand", "min_price", "max_price")


def filter_mask(fs: FeatureSet, filters: Mapping[str, object]) -> np.ndarray:
    """(n_items,) bool by item index: the items every filter allows."""
    unknown = sorted(set(filters) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown filter {', '.join(unknown)}: use {', '.join(KEYS)}")
    ok = pl.lit(True)
    if "category" in filters:
        c = fs.vocabs.category.encode_series(pl.Series([str(filters["category"])]))[0]
        ok = ok & pl.col("category_tok").list.contains(c) & pl.lit(c > 0)
    if "brand" in filters:
        given = filters["brand"]
        if not isinstance(given, str | Iterable):
            raise TypeError(f"filter brand must be a name or a list of names, got {given!r}")
        names = [given] if isinstance(given, str) else list(given)
        brands = fs.vocabs.brand.encode_series(pl.Series([str(n) for n in names])).to_list()
        ok = ok & pl.col("brand_idx").is_in([b for b in brands if b > 0])
    for key, op in (("min_price", "ge"), ("max_price", "le")):
        if key in filters:
            value = filters[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"filter {key} must be a number, got {value!r}")
            ok = ok & getattr(pl.col("price"), op)(float(value)).fill_null(False)
    mask = np.zeros(fs.vocabs.item.size, bool)
    mask[fs.items.select(pl.col("item_idx").filter(ok))["item_idx"].to_numpy()] = True
    return mask
