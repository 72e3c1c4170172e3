"""User attributes as one bag of ``column=value`` tokens (works for any attribute columns)."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl


def attribute_strings(attrs: Sequence[str]) -> pl.Expr:
    """``["age_bucket=25-34", "country=de", ...]`` per row; null attributes are left out."""
    if not attrs:
        return pl.lit([], pl.List(pl.String))
    parts = [pl.lit(f"{a}=") + pl.col(a) for a in attrs]
    return pl.concat_list(parts).list.drop_nulls()


def user_attribute_tokens(
    users: pl.LazyFrame, *, user, token, attrs: Sequence[str]
) -> pl.LazyFrame:
    """One row per user: user_idx, attr_tok (encoded attribute tokens), signup_ts."""
    return users.select(
        user.encode(pl.col("user_id")).alias("user_idx"),
        "user_id",
        token.encode_list(attribute_strings(attrs)).alias("attr_tok"),
        "signup_ts",
    ).sort("user_idx")
