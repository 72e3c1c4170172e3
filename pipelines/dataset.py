"""From validated tables to a persisted feature set: vocabularies, encoded interactions with
their split, item content, user attributes, histories, popularity and affinities.

`build_features` is what the nightly job and the demo call; `FeatureSet.save` / `load` persist
everything as Parquet (plus a small JSON of scalars) so the stages above can run separately.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import polars as pl

from pipelines.config import PipelineConfig
from pipelines.encode import INDEX_DTYPE, STORED_INDEX, Vocabulary
from pipelines.errors import ArtifactError, DataError
from pipelines.features import (
    category_prefixes,
    item_content,
    item_popularity,
    positives,
    price_edges,
    text_tokens,
    user_attribute_tokens,
    user_category_affinity,
    user_history,
)
from pipelines.features.users import attribute_strings
from pipelines.io import atomic_path, write_parquet
from pipelines.progress import Report, silent
from pipelines.scalars import datetime_or
from pipelines.split import SPLIT, resolve_cutoffs, split_interactions
from pipelines.validate import Tables, validate_tables

Window = Literal["train", "valid", "all"]
"""Which interactions feed histories and statistics: train only (model selection), train and
valid (the test-time view), or all (what a published model is fitted on)."""


@dataclass(frozen=True, eq=False)
class Vocabularies:
    """All id and token vocabularies of a data set."""

    user: Vocabulary
    item: Vocabulary
    category: Vocabulary
    brand: Vocabulary
    token: Vocabulary
    user_attr: Vocabulary

    @classmethod
    def fit(cls, tables: Tables, cfg: PipelineConfig) -> Vocabularies:
        items, users = tables.items, tables.users
        attrs = [c for c in users.columns if c not in ("user_id", "signup_ts")]
        cats = items.select(category_prefixes(pl.col("category"))).to_series().explode()
        tokens = items.select(text_tokens(pl.col("title"), pl.col("tags"))).to_series().explode()
        return cls(
            user=Vocabulary.fit("user", users["user_id"]),
            item=Vocabulary.fit("item", items["item_id"]),
            category=Vocabulary.fit("category", cats),
            brand=Vocabulary.fit("brand", items["brand"]),
            token=Vocabulary.fit(
                "token",
                tokens,
                max_size=cfg.features.title_vocab_size,
                min_count=cfg.features.min_token_count,
            ),
            user_attr=Vocabulary.fit(
                "user_attr", users.select(attribute_strings(attrs)).to_series().explode()
            ),
        )

    def save(self, folder: Path) -> None:
        for f in fields(self):
            getattr(self, f.name).save(folder)

    @classmethod
    def load(cls, folder: Path) -> Vocabularies:
        return cls(**{f.name: Vocabulary.load(folder, f.name) for f in fields(cls)})


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Everything the models need, keyed by contiguous indices (0 = OOV)."""

    vocabs: Vocabularies
    interactions: pl.DataFrame  # user_idx, item_idx, ts, event, value, weight, split (positives)
    items: pl.DataFrame  # item content, one row per item_idx (1..n)
    users: pl.DataFrame  # user_idx, attr_tok, signup_ts
    history: pl.DataFrame  # user_idx, history (oldest first), history_ts
    popularity: pl.DataFrame  # item_idx, counts per window, days_since_last
    affinity: pl.DataFrame  # user_idx, top_category, affinity, share
    as_of: datetime  # the time histories and statistics are computed at
    valid_start: datetime | None
    test_start: datetime | None
    window: Window

    FRAMES = ("interactions", "items", "users", "history", "popularity", "affinity")

    def __post_init__(self) -> None:
        for name in self.FRAMES:
            object.__setattr__(self, name, _indices_as(getattr(self, name), INDEX_DTYPE))

    def stored(self, name: str) -> pl.DataFrame:
        """Frame `name` as files hold it: its indices in the vocabularies' `STORED_INDEX`."""
        frame: pl.DataFrame = getattr(self, name)
        return _indices_as(frame, STORED_INDEX)

    def window_interactions(self) -> pl.DataFrame:
        """The positives histories and statistics were built from (those of `window`)."""
        return self.interactions.filter(_window_filter(self.window))

    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        self.vocabs.save(folder / "vocab")
        for name in self.FRAMES:
            write_parquet(self.stored(name), folder / "features" / f"{name}.parquet")
        meta = {
            "as_of": self.as_of.isoformat(),
            "window": self.window,
            "valid_start": self.valid_start and self.valid_start.isoformat(),
            "test_start": self.test_start and self.test_start.isoformat(),
        }
        with atomic_path(folder / "features" / "meta.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: Path, *, only: Collection[str] | None = None) -> FeatureSet:
        """The feature set saved in `folder`; with `only`, the frames not named are empty
        (with their columns): a served version whose request tables are stored reads its
        items, not every interaction."""
        folder = Path(folder)
        meta_path = folder / "features" / "meta.json"
        if not meta_path.is_file():
            raise ArtifactError(meta_path, "feature set not found (run the features stage first)")
        meta = json.loads(meta_path.read_text())
        frames = {
            n: pl.read_parquet(folder / "features" / f"{n}.parquet")
            if only is None or n in only
            else pl.DataFrame(schema=pl.read_parquet_schema(folder / "features" / f"{n}.parquet"))
            for n in cls.FRAMES
        }

        def ts(v: str | None) -> datetime | None:
            return None if v is None else datetime.fromisoformat(v)

        return cls(
            vocabs=Vocabularies.load(folder / "vocab"),
            **frames,
            as_of=datetime.fromisoformat(meta["as_of"]),
            window=meta["window"],
            valid_start=ts(meta["valid_start"]),
            test_start=ts(meta["test_start"]),
        )


INDEX_COLUMNS = ("user_idx", "item_idx", "history")
"""The columns of a feature set's frames that hold user or item indices (`history`: a list)."""


def _indices_as(frame: pl.DataFrame, dtype: type[pl.DataType]) -> pl.DataFrame:
    """`frame` with its `INDEX_COLUMNS` in `dtype` (as is where they already are)."""
    casts = [
        pl.col(c).cast(pl.List(dtype) if c == "history" else dtype)
        for c in INDEX_COLUMNS
        if c in frame.columns and frame.schema[c] not in (dtype, pl.List(dtype))
    ]
    return frame.with_columns(casts) if casts else frame


def _window_filter(window: Window) -> pl.Expr:
    return {
        "train": pl.col(SPLIT) == "train",
        "valid": pl.col(SPLIT).is_in(["train", "valid"]),
        "all": pl.lit(True),
    }[window]


FEATURE_STEPS = 6


def build_features(
    cfg: PipelineConfig,
    *,
    window: Window = "train",
    tables: Tables | None = None,
    vocabs: Vocabularies | None = None,
    resplit: Callable[[pl.LazyFrame], pl.LazyFrame] | None = None,
    report: Report = silent,
) -> FeatureSet:
    """Validate the inputs (unless `tables` is given) and build every feature.

    Interactions of all splits are kept (with their `split` label) for training and
    evaluation; histories, popularity and affinity use only the rows of `window`, as of the
    end of that window. `vocabs` (default: fitted on the tables) lets an incremental run keep
    a trained model's indices. `resplit` rewrites the configured split (and may drop rows):
    the per-user cutoffs of the re-ranker's training lists (`pipelines.split.per_user_cutoff`).
    """
    report("validate inputs")
    tables = tables or validate_tables(cfg.data, cfg.columns)
    fc = cfg.features
    report("vocabularies")
    vocabs = vocabs or Vocabularies.fit(tables, cfg)
    report("encode and split")
    last_ts = tables.interactions["ts"].max()
    if not isinstance(last_ts, datetime):
        raise DataError(cfg.data.interactions, "no interaction has a timestamp")
    pos = (
        tables.interactions.lazy()
        .pipe(positives, fc.event_weights)
        .pipe(split_interactions, cfg.split, last_ts)
        .pipe(resplit or (lambda lf: lf))
        .select(
            vocabs.user.encode(pl.col("user_id")).alias("user_idx"),
            vocabs.item.encode(pl.col("item_id")).alias("item_idx"),
            "ts",
            "event",
            "value",
            "weight",
            SPLIT,
        )
        .sort("ts", "user_idx", "item_idx")
        .collect(engine="streaming")
    )
    valid_start: datetime | None
    test_start: datetime | None
    as_of: datetime | None
    if cfg.split.strategy == "temporal" and resplit is None:
        cut = resolve_cutoffs(cfg.split, last_ts)
        valid_start, test_start = cut.valid_start, cut.test_start
        as_of = {"train": valid_start, "valid": test_start, "all": None}[window]
    else:
        valid_start = test_start = None
        as_of = None
    seen = pos.lazy().filter(_window_filter(window))
    if as_of is None:  # just after the window's last row: statistics count rows with ts < as_of
        last_in_window = pos.filter(_window_filter(window))["ts"].max()
        as_of = datetime_or(last_in_window, last_ts) + timedelta(seconds=1)

    report("item content and user attributes")
    items = item_content(
        tables.items.lazy(),
        item=vocabs.item,
        category=vocabs.category,
        brand=vocabs.brand,
        token=vocabs.token,
        edges=price_edges(tables.items["price"], fc.price_buckets),
    ).collect()
    attrs = [c for c in tables.users.columns if c not in ("user_id", "signup_ts")]
    users = user_attribute_tokens(
        tables.users.lazy(), user=vocabs.user, token=vocabs.user_attr, attrs=attrs
    ).collect()
    report("histories")
    history = seen.pipe(user_history, length=fc.history_length).collect(engine="streaming")
    report("popularity and affinity")
    popularity = seen.pipe(
        item_popularity,
        at=as_of,
        windows_days=fc.popularity_windows_days,
    ).collect(engine="streaming")
    affinity = seen.pipe(
        user_category_affinity, items.lazy(), at=as_of, half_life_days=fc.affinity_half_life_days
    ).collect(engine="streaming")
    return FeatureSet(
        vocabs=vocabs,
        interactions=pos,
        items=items,
        users=users,
        history=history,
        popularity=popularity,
        affinity=affinity,
        as_of=as_of,
        valid_start=valid_start,
        test_start=test_start,
        window=window,
    )


def require_windows(fs: FeatureSet, path: Path, windows: tuple[str, ...]) -> None:
    """Raise a `DataError` naming the interactions file when one of `windows` holds no
    positive interaction: models learn from, early-stop on or are scored on these windows,
    and an empty one would otherwise surface as a crash deep inside a model library."""
    counts = dict(fs.interactions.group_by(SPLIT).len().iter_rows())
    empty = [w for w in windows if not counts.get(w)]
    if not empty:
        return
    found = ", ".join(f"{w} {counts.get(w, 0)}" for w in ("train", "valid", "test"))
    cuts = (
        f"; valid starts {fs.valid_start:%Y-%m-%d %H:%M}, test starts "
        f"{fs.test_start:%Y-%m-%d %H:%M}"
        if fs.valid_start and fs.test_start
        else ""
    )
    span = fs.interactions["ts"]
    period = (
        f"{span.dt.min():%Y-%m-%d} to {span.dt.max():%Y-%m-%d}" if span.len() else "no positives"
    )
    advice = (
        "give more days of data or shorten [split] valid_days / test_days"
        if fs.valid_start
        else "give more interactions per user"
    )
    raise DataError(
        path,
        f"too little data: the {' and '.join(empty)} window(s) hold no "
        f"positive interaction (positives by window: {found}{cuts}; the "
        f"positives span {period}); {advice}",
        column="ts",
    )
