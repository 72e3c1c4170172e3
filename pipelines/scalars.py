"""Plain Python values of Polars aggregates. `Series.max()`, `.min()` and `.mean()` are typed
as any Python literal a column can hold; these read the one a numeric or datetime column
gives, with the fallback the caller names for an empty (or all-null) column."""

from __future__ import annotations

from datetime import datetime


def int_or(value: object, default: int) -> int:
    """A numeric aggregate as an int; `default` where it is None or 0 (`int(value or
    default)`)."""
    return int(value) if isinstance(value, int | float) and value else default


def float_or(value: object, default: float) -> float:
    """A numeric aggregate as a float; `default` where it is None or 0 (`float(value or
    default)`)."""
    return float(value) if isinstance(value, int | float) and value else default


def datetime_or(value: object, default: datetime) -> datetime:
    """A datetime aggregate; `default` where it is None (an empty column)."""
    return value if isinstance(value, datetime) else default
