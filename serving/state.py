"""One loaded version, immutable once built: everything a request reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightgbm as lgb
import numpy as np
import polars as pl

from embeddings.checkpoint import load_state_dict
from embeddings.user_encoder import UserEncoder
from engine.candidates import ModelContext, default_sources
from engine.config import EngineConfig
from engine.jobs.artifacts import CURRENT, MANIFEST, current_version, verify
from engine.request import ListedItem, RequestTables
from engine.request.ids import IdIndex
from engine.request.lists import anonymous_list
from engine.request.store import (
    has_tables,
    load_content_neighbours,
    load_ids,
    load_item_item,
    load_served_features,
    load_tables,
)
from engine.rerank.explain import warm_explanations
from engine.rerank.fallback import Ranker
from engine.rerank.features import rerank_tables
from engine.rerank.lists import ItemFacts
from engine.rerank.ranker import early_exit_for, load_ranker, warm_ranges
from engine.rules import Candidate, allocate_slots
from engine.scoring import ListScorer
from engine.version import version_context
from pipelines.dataset import FeatureSet
from pipelines.encode import INDEX_DTYPE
from pipelines.errors import ArtifactError
from pipelines.scalars import int_or
from serving.filters import filter_mask

Kind = Literal["product", "ad", "mixed"]
AD_COLUMNS = ["pctr", "bid", "ecpm"]


def resolve(path: Path) -> Path:
    """The version folder of `path`: itself if it holds a manifest, else its `current`."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path.resolve()
    live = current_version(path)
    if live is None:
        raise ArtifactError(path / CURRENT, "no published version here (run recengine nightly)")
    return live


def _built_tables(ctx: ModelContext, folder: Path) -> RequestTables:
    """The request tables of a version from before they were stored: built from its
    candidate sources over the whole feature set."""
    rerank_tables(ctx)
    ctx.warm()
    sources = default_sources(ctx)
    return RequestTables.build(
        ctx, sources, content_neighbours=load_content_neighbours(sources, folder)
    )


def _warm(booster: Ranker, cfg: EngineConfig) -> None:
    """Build every tree range a request reads while the version loads: nothing is filled in
    lazily while calls run concurrently (and no first request pays for it)."""
    if isinstance(booster, lgb.Booster):
        warm_ranges(booster, early_exit_for(cfg.rerank, 1))
        warm_explanations(booster, shap_trees=cfg.rerank.explain_shap_trees)


@dataclass(frozen=True, eq=False)
class VersionState:
    folder: Path
    cfg: EngineConfig
    fs: FeatureSet
    ctx: ModelContext
    booster: Ranker  # the LightGBM model, or the signal order published instead
    names: list[str]
    facts: ItemFacts
    encoder: UserEncoder
    users: IdIndex  # user ids <-> user_idx
    items: IdIndex  # item ids <-> item_idx
    attrs: IdIndex  # "attribute=value" tokens <-> their index
    ads: pl.DataFrame  # the published ad lists, by user_idx then rank
    ad_rows: np.ndarray  # (n_users + 1,) user u's ads: rows ad_rows[u]:ad_rows[u+1]
    default_ads: pl.DataFrame  # ads by mean eCPM, for users without a list
    scorer: ListScorer  # users -> lists: every product list this version gives
    events_through: int  # the event log's events up to this id are in the version's data

    @property
    def positive_events(self) -> list[str]:
        """The events a history counts (weight above 0)."""
        return [e for e, w in self.cfg.features.event_weights.items() if w > 0]

    @property
    def tables(self) -> RequestTables:
        """The arrays a known user's request reads."""
        return self.scorer.tables

    @classmethod
    def load(cls, folder: Path) -> VersionState:
        manifest = verify(folder)
        cfg = EngineConfig.model_validate(manifest["config"])
        stored = has_tables(folder)
        fs = load_served_features(folder) if stored else FeatureSet.load(folder)
        ctx = version_context(
            folder, fs, cfg.candidates, use_gpu=cfg.index.use_gpu, checked=True
        )  # `verify` just read every file of the version
        load_item_item(ctx, folder)
        booster = load_ranker(folder / "rerank")
        _warm(booster, cfg)
        tables = load_tables(ctx, folder) if stored else _built_tables(ctx, folder)
        ids = load_ids(fs, folder)
        facts = ItemFacts.build(fs, ctx.eligible, ctx.item_vectors)
        ads = pl.read_parquet(folder / "recs" / "kind=ad" / "*.parquet")
        by_user = fs.vocabs.user.encode_series(ads["user_id"]).cast(INDEX_DTYPE).alias("_user")
        ads = ads.with_columns(by_user).sort("_user", "rank")
        ad_rows = np.searchsorted(ads["_user"].to_numpy(), np.arange(fs.vocabs.user.size + 1))
        default_ads = (  # rounded: a parallel mean's last bits follow the summing order
            ads.group_by("item_id")
            .agg(pl.col(c).mean().round(12) for c in AD_COLUMNS)
            .sort(["ecpm", "item_id"], descending=[True, False])
        )
        scorer = ListScorer(tables, booster, booster.feature_name(), facts, cfg.rules, cfg.rerank)
        scorer.warm()
        return cls(
            folder=folder,
            cfg=cfg,
            fs=fs,
            ctx=ctx,
            booster=booster,
            names=booster.feature_name(),
            facts=facts,
            encoder=UserEncoder.from_state_dict(load_state_dict(folder / "embeddings", mmap=True)),
            users=ids["user"],
            items=ids["item"],
            attrs=ids["user_attr"],
            ads=ads,
            ad_rows=ad_rows,
            default_ads=default_ads,
            scorer=scorer,
            events_through=int_or(manifest.get("events_through"), 0),
        )

    # ------------------------------------------------------------------ products
    def _anonymous_list(
        self,
        history: list[str],
        features: dict[str, str],
        k: int,
        exclude: set[int],
        allowed: np.ndarray | None = None,
    ) -> list[ListedItem]:
        hist = self.items.known(history)[-self.cfg.features.history_length :]
        attrs = self.attrs.known(f"{a}={v}" for a, v in features.items())
        return anonymous_list(
            self.tables,
            self.facts,
            self.cfg.rules,
            self.encoder.encode([hist], [attrs]),
            np.asarray(hist, np.int64),
            k=k,
            exclude=exclude,
            allowed=allowed,
        )

    def _listed(
        self,
        user_id: str | None,
        k: int,
        exclude: set[int],
        history: list[str] | None,
        features: dict[str, str],
        explain: bool,
        allowed: np.ndarray | None,
        live: list[str],
    ) -> list[ListedItem]:
        u = self.users.get(user_id) if user_id is not None else None
        if u is not None and history is None:
            return self.scorer.user_list(
                u,
                k=k,
                exclude=exclude,
                allowed=allowed,
                explain=explain,
                live=np.asarray(self.items.known(live), np.int64) if live else None,
            )
        return self._anonymous_list([*(history or []), *live], features, k, exclude, allowed)

    def _product_rows(self, listed: list[ListedItem], explain: bool) -> list[dict[str, object]]:
        return [
            {
                "item_id": self.items.id_of(r.item),
                "rank": r.rank,
                "score": r.score,
                **({"why": r.why} if explain else {}),
            }
            for r in listed
        ]

    # ------------------------------------------------------------------ ads
    def _ads(self, user_id: str | None, k: int, exclude: set[str]) -> pl.DataFrame:
        u = self.users.get(user_id) if user_id is not None else None
        a, b = (int(self.ad_rows[u]), int(self.ad_rows[u + 1])) if u is not None else (0, 0)
        rows = self.ads[a:b] if b > a else self.default_ads
        return (
            rows.filter(~pl.col("item_id").is_in(list(exclude)))
            .head(k)
            .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).alias("rank"))
        )

    # ------------------------------------------------------------------ requests
    def recommend(
        self,
        user_id: str | None,
        *,
        k: int,
        kind: Kind,
        exclude: list[str],
        history: list[str] | None,
        user_features: dict[str, str],
        explain: bool,
        filters: dict[str, object] | None = None,
        live: list[str] | None = None,
    ) -> list[dict[str, object]]:
        """`live`: the items of the user's events since the version, oldest first (they join
        the history the candidates, the recent-intent features and the seen items read)."""
        excluded = set(self.items.known(exclude))
        allowed = filter_mask(self.fs, filters) if filters else None
        if kind == "ad":
            return self._ad_rows(self._ads(user_id, k, set(exclude)))
        listed = self._listed(
            user_id, k, excluded, history, user_features, explain, allowed, live or []
        )
        out = self._product_rows(listed, explain)
        if kind == "product":
            return out
        ad_frame = self._ads(user_id, self.cfg.rules.max_ads_in_list, set(exclude))
        ads = self._ad_rows(ad_frame)
        mixed = allocate_slots(
            [Candidate(i, float(r.score)) for i, r in enumerate(listed)],
            [
                (Candidate(len(out) + j, float(e) / 1000.0), float(e) / 1000.0)
                for j, e in enumerate(ad_frame["ecpm"].to_list())
            ],
            k,
            exchange_rate=self.cfg.rules.ad_exchange_rate,
            max_ads=self.cfg.rules.max_ads_in_list,
        )
        rows = [
            (out[c.item] if kind_ == "product" else ads[c.item - len(out)]) | {"kind": kind_}
            for kind_, c in mixed
        ]
        return [r | {"rank": n} for n, r in enumerate(rows, 1)]

    def _ad_rows(self, ads: pl.DataFrame) -> list[dict[str, object]]:
        return [
            {
                "item_id": r["item_id"],
                "rank": r["rank"],
                "score": r["ecpm"],
                **{c: r[c] for c in AD_COLUMNS},
            }
            for r in ads.iter_rows(named=True)
        ]

    def recommend_batch(self, user_ids: list[str], *, k: int, kind: str) -> pl.DataFrame:
        if kind == "ad":
            parts = [
                pl.DataFrame(self._ad_rows(self._ads(u, k, set()))).with_columns(
                    pl.lit(u).alias("user_id")
                )
                for u in user_ids
            ]
            parts = [p for p in parts if p.height]
            if not parts:
                return pl.DataFrame(
                    schema={
                        "user_id": pl.String,
                        "rank": pl.Int32,
                        "item_id": pl.String,
                        "score": pl.Float64,
                        **dict.fromkeys(AD_COLUMNS, pl.Float64),
                    }
                )
            return pl.concat(parts).select("user_id", "rank", "item_id", "score", *AD_COLUMNS)
        known = np.array(sorted(set(self.users.known(user_ids))), np.int64)
        lists = self.scorer.lists(known, k=k) if len(known) else None
        parts = []
        if lists is not None and lists.height:
            parts.append(
                lists.select(
                    self.fs.vocabs.user.decode(lists["user_idx"]).alias("user_id"),
                    "rank",
                    self.fs.vocabs.item.decode(lists["item_idx"]).alias("item_id"),
                    "score",
                )
            )
        strangers = [u for u in user_ids if u not in self.users]
        if strangers:  # no history, no attributes: one anonymous list serves them all
            anon = self._anonymous_list([], {}, k, set())
            one = pl.DataFrame(
                {
                    "rank": [r.rank for r in anon],
                    "item_id": [self.items.id_of(r.item) for r in anon],
                    "score": [r.score for r in anon],
                },
                schema={"rank": pl.Int32, "item_id": pl.String, "score": pl.Float64},
            )
            parts.append(
                pl.DataFrame({"user_id": strangers})
                .join(one, how="cross")
                .select("user_id", "rank", "item_id", "score")
            )
        if not parts:
            return pl.DataFrame(
                schema={
                    "user_id": pl.String,
                    "rank": pl.Int32,
                    "item_id": pl.String,
                    "score": pl.Float64,
                }
            )
        order = {u: n for n, u in enumerate(user_ids)}
        return (
            pl.concat(parts)
            .with_columns(
                pl.col("user_id").replace_strict(order, return_dtype=pl.Int64).alias("_o")
            )
            .sort("_o", "rank")
            .drop("_o")
        )

    def similar_items(self, item_id: str, k: int) -> list[dict[str, object]]:
        i = self.items.get(item_id)
        if i is None:
            return []
        scores, items = self.ctx.index.search(
            self.ctx.item_vectors[i : i + 1], k, exclude=[np.array([i])], allowed=self.ctx.eligible
        )
        return [
            {"item_id": self.items.id_of(int(j)), "rank": n, "score": float(s)}
            for n, (s, j) in enumerate(zip(scores[0], items[0], strict=True), 1)
            if j >= 0
        ]
