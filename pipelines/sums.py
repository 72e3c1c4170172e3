"""Float sums that come out the same in any order.

Polars adds a group's rows in whatever order its threads meet them, so a float sum can differ
in its last bits from one run to the next (2.8e-13 in a user's category affinity on the
sample). The re-ranker is fitted on such features, and a last-bit difference is enough to
change a split, the early stop and then lists: two runs on the same data and code gave 35 and
39 trees. `exact_sum` rounds each value to a multiple of 2^-32 (2.3e-10) and adds integers,
whose sum is the same in any order; and sums of its results are exact floats too (multiples
of 2^-32 below 2^21 add without rounding), so the shares computed from them are repeatable.
"""

from __future__ import annotations

import polars as pl

SCALE = 2.0**32


def exact_sum(expr: pl.Expr) -> pl.Expr:
    """`expr.sum()` over values rounded to multiples of 2^-32, added as integers (a value or
    total past 2^31 is an error). A group holding NaN or an infinity sums as floats do (NaN
    or the infinity, whatever the order); nulls add nothing, as in `sum`."""
    finite = pl.when(expr.is_finite()).then(expr)
    total = (finite * SCALE).round().cast(pl.Int64).sum().cast(pl.Float64) / SCALE
    return pl.when(expr.is_finite().not_().any()).then(expr.sum()).otherwise(total)
