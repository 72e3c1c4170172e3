"""The stages of the nightly job, in order. Each reads what earlier stages wrote into the run's
folder, writes its own outputs there (each file atomically) and returns the figures it
measured; the runner records completion only after a stage returns, so a stage that was
killed simply runs again.

Model selection uses the validation window (early stopping, the quality gate's figures); the
models that produce the published lists are then fitted on every interaction up to the run.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from time import perf_counter

import numpy as np
import polars as pl

from embeddings.checkpoint import save_checkpoint
from embeddings.export import export_vectors
from engine.ads.lists import ad_lists, ad_pctr
from engine.ads.log import ad_windows, logged_ads
from engine.ads.pctr import Pctr, pctr_report, train_pctr
from engine.config import EngineConfig
from engine.evaluation.evaluate import EVALUATION_KEYS, evaluate
from engine.evaluation.report import write_report
from engine.index import build_index
from engine.jobs.ranks import Ranks
from engine.request.store import (
    load_item_item,
    load_tables,
    save_ids,
    save_item_item,
    save_items,
    save_tables,
    save_vectors,
)
from engine.rerank.ranker import load_ranker, save_ranker
from engine.rerank.training import FittedRanker, fit_ranker, list_mode, training_lists
from engine.retrieval import train_retrieval
from engine.scoring import ListScorer
from engine.version import dense_vectors, version_context
from pipelines.dataset import FeatureSet, build_features, require_windows
from pipelines.io import write_parquet
from pipelines.progress import Report, silent
from pipelines.validate import validate_tables

log = logging.getLogger(__name__)

Figures = dict[str, float | int | str | None]


def _given(figures: Figures, name: str) -> float | int | str:
    """The figure `name` of a stage's record, which must hold one."""
    value = figures[name]
    if value is None:
        raise ValueError(f"the stage recorded no {name}")
    return value


def _float_or_none(value: float | int | str | None) -> float | None:
    return None if value is None else float(value)


def _str_or_none(value: float | int | str | None) -> str | None:
    return None if value is None else str(value)


@dataclass
class Run:
    """One run of the job: its config, its folder, what finished stages measured."""

    cfg: EngineConfig
    dir: Path
    figures: dict[str, Figures] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # of each finished stage
    report: Report = silent
    base: Path | None = None  # the live version an incremental run builds on
    base_figures: dict[str, Figures] = field(default_factory=dict)
    ranks: Ranks = field(default_factory=Ranks)  # the processes sharing the run

    def features(self) -> FeatureSet:
        return FeatureSet.load(self.dir)


def evaluated(cfg: EngineConfig) -> bool:
    """Whether a run scores its models on the test window (every model refitted without it:
    a global test window, or each user's held-out latest interactions)."""
    return cfg.evaluation.enabled


def validate(run: Run) -> Figures:
    t = validate_tables(run.cfg.data, run.cfg.columns)
    return {
        "interactions": t.interactions.height,
        "items": t.items.height,
        "users": t.users.height,
        "last_ts": str(t.interactions["ts"].max()),
    }


def features(run: Run) -> Figures:
    cfg = run.cfg
    fs = build_features(cfg, window="all")
    require_windows(
        fs,
        cfg.data.interactions,
        ("train", "valid", "test") if evaluated(cfg) else ("train", "valid"),
    )
    fs.save(run.dir)
    return {"as_of": fs.as_of.isoformat(), "positives": fs.interactions.height}


def train(run: Run) -> Figures:
    """Early-stop on the validation window to choose the epoch count, then fit on all."""
    chosen = train_retrieval(run.cfg)
    epochs = chosen.result.best_epoch + 1
    final = train_retrieval(run.cfg, window="all", epochs=epochs)
    out = run.dir / "embeddings"
    save_checkpoint(out, final.result.state_dict, final.result.sizes, run.cfg.model)
    export_vectors(
        final.model,
        run.features(),
        known_items=final.result.known_items,
        known_users=final.result.known_users,
        history_length=run.cfg.features.history_length,
        folder=out,
    )
    return {
        "epochs": epochs,
        "valid_recall": chosen.result.best_recall,
        "recall_k": run.cfg.train.recall_k,
        "valid_recall_by_epoch": " ".join(
            f"{e + 1}:{r.recall:.4f}"
            for e, r in enumerate(chosen.result.epochs)
            if r.recall is not None
        ),
    }


def index(run: Run) -> Figures:
    iv, _, uv = dense_vectors(run.dir)
    fs = run.features()
    products = fs.items.filter(pl.col("kind") == "product")["item_idx"].to_numpy()
    built, figures = build_index(iv[products], products, run.cfg.index, queries=uv[1:])
    built.save(run.dir / "index")
    return {
        "kind": built.kind,
        **{k: v for k, v in figures.items() if isinstance(v, (int, float, str))},
    }


def latest_cutoff(as_of: datetime, label_days: float) -> datetime:
    """The last cutoff with a whole label window before the run's data ends (`as_of`)."""
    end = datetime.combine((as_of - timedelta(seconds=1)).date(), time()) + timedelta(days=1)
    return end - timedelta(days=label_days)


def rerank(run: Run) -> Figures:
    """Training lists and the ranker's fit. Lists cut per user leave the evaluation's test
    rows out when the run is evaluated, so that the evaluation can score this very ranker
    instead of building the same lists a second time (`evaluation` reads `reusable`)."""
    cfg = run.cfg
    as_of = datetime.fromisoformat(str(run.figures["features"]["as_of"]))  # no feature load
    latest = latest_cutoff(as_of, cfg.rerank.label_days)
    tables = validate_tables(cfg.data, cfg.columns)
    mode = list_mode(cfg, tables, latest)
    reusable = mode == "per_user" and evaluated(cfg)
    t = perf_counter()
    lists = training_lists(
        cfg,
        latest,
        epochs=int(_given(run.figures["train"], "epochs")),
        exclude_test=reusable,
        tables=tables,
    )
    t_lists = perf_counter() - t
    fitted = fit_ranker(lists, cfg)
    if fitted.fallback:
        log.warning(
            "re-ranker not published, lists ordered by %s: %s", fitted.names[0], fitted.fallback
        )
        run.report(f"re-ranker not published: {fitted.names[0]} order ({fitted.fallback})")
    save_ranker(fitted.ranker, run.dir / "rerank")
    return {
        "lists": fitted.lists,
        "cuts": lists["cutoff"].n_unique() if lists.height else 0,
        "rows": lists.height,
        "mode": mode,
        "reusable": int(reusable),
        "lists_seconds": round(t_lists, 1),
        "fit_seconds": round(perf_counter() - t - t_lists, 1),
        "trees": fitted.trees,
        "holdout_ndcg": fitted.holdout_ndcg,
        "holdout_two_tower_ndcg": fitted.holdout_two_tower_ndcg,
        "order": fitted.names[0] if fitted.fallback else None,
        "num_leaves": fitted.num_leaves,
        "tried": fitted.tried_text,
        "fallback": fitted.fallback,
        **{f"holdout_{c}_order_ndcg": v for c, v in fitted.orders.items()},
    }


def _ad_log(cfg: EngineConfig) -> pl.DataFrame:
    return logged_ads(validate_tables(cfg.data, cfg.columns))


def ads(run: Run) -> Figures:
    """pCTR scored on the test window after fitting on the validation window (the figures),
    then refitted on the test window, whose features are the freshest, for the lists."""
    cfg = run.cfg
    tables = validate_tables(cfg.data, cfg.columns)
    log = logged_ads(tables)
    w = ad_windows(
        log,
        build_features(cfg, window="train", tables=tables),
        build_features(cfg, window="valid", tables=tables),
    )
    if w is None:
        return {"impressions": log.height, "trained": 0}
    figures = pctr_report(train_pctr(w.fit, cfg.ads), w.test)
    train_pctr(w.test, cfg.ads).save(run.dir / "ads")
    return {"impressions": log.height, "trained": 1, **figures}


def recs(run: Run) -> Figures:
    """Top-k products (with `why`) and top ads for every user. Rank 0 builds the request
    tables and stores them in the run's folder; every rank lists its share of the users from
    them (`recs/kind=product/part-<rank>-<chunk>.parquet`) and scores its users' ad
    shortlists; rank 0 then holds the auction over every user, in one order, so that budgets
    and pacing span the whole batch as in one process."""
    cfg, ranks = run.cfg, run.ranks
    out, scratch = run.dir / "recs", run.dir / "ad-pctr"
    ranker = load_ranker(run.dir / "rerank")
    figures: Figures = {}
    if ranks.is_main:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
        fs = run.features()
        ctx = version_context(run.dir, fs, cfg.candidates, use_gpu=cfg.index.use_gpu)
        with ranks.cores(shared=False):  # the others wait: every core builds the tables
            scorer = ListScorer.build(ctx, ranker, cfg.rules, cfg.rerank, threads=ranks.threads())
        figures = {
            "stored_models": ",".join(save_item_item(ctx, run.dir)),
            "request_tables": save_tables(scorer.tables, run.dir),
        }
        save_vectors(run.dir, ctx)
        save_ids(fs, run.dir)
        save_items(fs, run.dir)
    ranks.barrier()  # the tables are stored: the other ranks map them instead of building
    if not ranks.is_main:  # loaded only now, so as not to hold memory while rank 0 builds
        fs = run.features()
        ctx = version_context(run.dir, fs, cfg.candidates, use_gpu=cfg.index.use_gpu)
        load_item_item(ctx, run.dir)
        scorer = ListScorer.build(
            ctx,
            ranker,
            cfg.rules,
            cfg.rerank,
            tables=load_tables(ctx, run.dir),
            threads=ranks.threads(),
        )
    every = fs.users["user_idx"].to_numpy().astype(np.int64)
    every = every[every > 0]
    users = every  # one process lists everyone: no ids to decode and hash
    if ranks.size > 1:
        users = every[ranks.mine(fs.vocabs.user.decode(pl.Series(every)).to_list())]
    n_rows = 0
    for part, a in enumerate(range(0, len(users), cfg.jobs.user_chunk)):
        chunk = users[a : a + cfg.jobs.user_chunk]
        run.report(f"product lists {a + len(chunk):,}/{len(users):,} users")
        lists = scorer.lists(chunk, k=cfg.jobs.k, explain=cfg.jobs.explain)
        write_parquet(
            _with_ids(lists, fs).drop("sources", "rules"),
            out / "kind=product" / f"part-{ranks.rank:03d}-{part:05d}.parquet",
        )
        n_rows += lists.height
    figures |= {"users": len(every), "product_rows": int(ranks.total(n_rows))}
    run.report("ad lists")
    ads_frame = pl.DataFrame(schema=AD_SCHEMA)
    spent: dict[int, float] = {}
    if (run.dir / "ads").is_dir():
        # the log is read from the inputs again: an incremental run reuses the ads model,
        # but today's impressions (frequency caps, past click rates) must be the new ones
        model, ad_log = Pctr.load(run.dir / "ads"), _ad_log(cfg)
        mine = ad_pctr(users, fs, model, ad_log, cfg.auction, when=fs.as_of)
        if ranks.size > 1:
            write_parquet(mine, scratch / f"part-{ranks.rank:03d}.parquet")
        ranks.barrier()
        if ranks.is_main:
            scored = pl.read_parquet(scratch / "*.parquet") if ranks.size > 1 else mine
            ads_frame, spent = ad_lists(
                every, fs, model, ad_log, cfg.auction, when=fs.as_of, pctr=scored
            )
            shutil.rmtree(scratch, ignore_errors=True)  # not part of the version
    if ranks.is_main:
        write_parquet(
            _with_ids(ads_frame.select(list(AD_SCHEMA)), fs),
            out / "kind=ad" / "part-00000.parquet",
        )
    return figures | {"ad_rows": ads_frame.height, "ad_spend": float(sum(spent.values()))}


AD_SCHEMA = {
    "user_idx": pl.Int64,
    "rank": pl.Int32,
    "item_idx": pl.Int64,
    "pctr": pl.Float64,
    "bid": pl.Float64,
    "ecpm": pl.Float64,
}


def _with_ids(lists: pl.DataFrame, fs: FeatureSet) -> pl.DataFrame:
    """`lists` keyed by the original user and item ids instead of indices."""
    return (
        lists.with_columns(
            fs.vocabs.user.decode(lists["user_idx"]).alias("user_id"),
            fs.vocabs.item.decode(lists["item_idx"]).alias("item_id"),
        )
        .drop("user_idx", "item_idx")
        .select("user_id", "rank", "item_id", pl.all().exclude("user_id", "rank", "item_id"))
    )


def evaluation(run: Run) -> Figures:
    """report/index.html and report/metrics.json: the offline evaluation (every model refitted
    on the train and validation windows, scored on the test window beside the baselines) and
    the figures every stage measured. An incremental run keeps its base version's evaluation:
    its models are the same."""
    cfg = run.cfg
    doc: dict[str, object] = {
        "nightly": run.figures,
        "nightly_seconds": dict(run.seconds),
        "config": cfg.model_dump(mode="json"),
    }
    if run.base is not None:
        old = run.base / "report" / "metrics.json"
        kept = json.loads(old.read_text()) if old.is_file() else {}
        doc |= {k: kept[k] for k in EVALUATION_KEYS if k in kept} | {"evaluated_in": run.base.name}
    elif evaluated(cfg):
        rr = run.figures["rerank"]
        ranker = None
        if rr.get("reusable"):  # lists cut per user without the test rows: the same ranker
            booster = load_ranker(run.dir / "rerank")
            ranker = FittedRanker(
                booster,
                booster.feature_name(),
                float(_given(rr, "holdout_ndcg")),
                _float_or_none(rr.get("holdout_two_tower_ndcg")),
                lists=int(rr.get("lists") or 0),
                fallback=_str_or_none(rr.get("fallback")),
            )
        doc |= evaluate(
            cfg,
            epochs=int(_given(run.figures["train"], "epochs")),
            report=run.report,
            ranker=ranker,
            lists=int(rr.get("lists") or 0),
        )
    write_report(run.dir / "report", doc)
    verdict = doc.get("verdict")
    return {
        "stages": len(run.figures),
        **{
            f"final_{k}": v
            for k, v in (verdict.items() if isinstance(verdict, dict) else ())
            if k in ("final", "best_baseline", "best_baseline_value", "oracle_share")
        },
    }


Stage = Callable[[Run], Figures]
PER_USER = {"recs"}
"""The stages every rank of a multi-process run takes part in, each listing its share of the
users; rank 0 runs the others alone (they fit models or read the whole catalogue)."""
STAGES: list[tuple[str, Stage]] = [
    ("validate", validate),
    ("features", features),
    ("train", train),
    ("index", index),
    ("rerank", rerank),
    ("ads", ads),
    ("recs", recs),
    ("evaluation", evaluation),
]
"""Every stage in order; publish follows (in `nightly`)."""
