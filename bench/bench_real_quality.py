"""List quality on real data: recengine's published product lists scored on held-out
interactions of three small public Amazon data sets, beside popularity, item-kNN, EASE and ALS
fitted on the same training rows, the figures of each stage of the list, and the published
S3-Rec and SASRec figures where they exist (`../shared/datasets/README.md` has the protocols).

Per data set:

1. The raw files become the data contract (Parquet) in a work folder, with the test set held
   out: grocery, each user's latest 20% of interactions (at least one, never all) in time order
   (ties by the file's row order), the rest given with their real timestamps and
   `[split] strategy = "holdout"`; toys and sports, each user's last item, the rest given one
   day per position with every user's sequence ending on the same day and
   `strategy = "leave_last_out"`. The config is the one a user would write: everything else
   default.
2. `recengine nightly --force` builds and publishes a version (timed).
3. The published lists are scored by full ranking on the held-out items the user had not had
   in training: NDCG@10 (binary relevance), recall@10 and HR@10, averaged over every user with
   such an item (a user without a list scores 0).
4. The baselines are tuned on a validation slice carved from the training rows by the same
   protocol (NDCG@10), refitted on all training rows and scored the same way.
5. Stage figures of the published version (candidate recall, the two-tower order over the
   whole corpus, the re-ranked candidates before the rules, the final lists) on the test users,
   a seeded sample of at most `--stage-users` of them.

    python bench/bench_real_quality.py [--datasets grocery,toys,sports | --quick]
        [--datasets-dir ../shared/datasets] [--work artifacts/bench/real] [--max-users N]
        [--no-tune] [--tune-users 5000] [--stage-users 5000] [--skip-nightly]

Writes artifacts/bench/real_quality.json (figures, and per data set every method's figures,
chosen parameters, timings and counts under `details`).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from harness import OUT, Report

if TYPE_CHECKING:
    from engine.evaluation.metrics import Truth

K = 10
END_DAY = datetime(2020, 1, 31)
"""The day every converted sequence ends on (its held-out last item); the one before it is
the day before, and so on."""
EVENT = "purchase"
HOLDOUT_SHARE = 0.2


@dataclass(frozen=True)
class Source:
    """One real data set: where its files are and how it is split."""

    name: str
    folder: str
    label: str
    strategy: str  # the [split] strategy recengine is given
    stem: str | None = None  # sequences: <stem>.txt and <stem>_item2attributes.json


DATASETS = {
    "grocery": Source("grocery", "amazon-grocery", "Amazon Grocery_and_Gourmet_Food", "holdout"),
    "toys": Source(
        "toys", "amazon-sequences", "Amazon Toys_and_Games", "leave_last_out", "Toys_and_Games"
    ),
    "sports": Source(
        "sports",
        "amazon-sequences",
        "Amazon Sports_and_Outdoors",
        "leave_last_out",
        "Sports_and_Outdoors",
    ),
}

PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    # S3-Rec (CIKM 2020), full ranking, last item held out, earlier items excluded
    "toys": {
        "PopRec": {"ndcg@10": 0.0061},
        "SASRec": {"hit_rate@10": 0.0675, "ndcg@10": 0.0374},
        "S3-Rec": {"hit_rate@10": 0.0700, "ndcg@10": 0.0376},
    },
    "sports": {
        "PopRec": {"ndcg@10": 0.0053},
        "SASRec": {"hit_rate@10": 0.0350, "ndcg@10": 0.0192},
        "S3-Rec": {"hit_rate@10": 0.0385, "ndcg@10": 0.0204},
    },
}

METRICS = (("ndcg@10", "NDCG@10"), ("recall@10", "recall@10"), ("hit_rate@10", "HR@10"))


# ---------------------------------------------------------------------------------------------
# conversion into the data contract


@dataclass(frozen=True)
class Converted:
    """A data set in the data contract, with its held-out test rows."""

    train: pl.DataFrame  # user_id, item_id, ts, event, row (file order): given to recengine
    test: pl.DataFrame  # user_id, item_id, ts: held out
    items: pl.DataFrame  # item_id[, category | tags]
    users: pl.DataFrame  # user_id


def latest_rows(df: pl.DataFrame, share: float | None) -> pl.Series:
    """True on each user's latest rows by (ts, row): round(share x n) of them, at least one and
    never all (a user with one row keeps it); the last one alone when `share` is None."""
    order = df.select(
        pl.col("user_id"), pl.col("ts"), pl.col("row"), pl.int_range(pl.len()).alias("_at")
    ).sort("user_id", "ts", "row")
    n = pl.len().over("user_id")
    pos = pl.int_range(pl.len()).over("user_id")
    held = (
        pl.lit(1, pl.Int64)
        if share is None
        else (n.cast(pl.Float64) * share).round().cast(pl.Int64).clip(1, None)
    )
    flagged = order.with_columns((pos >= n - pl.min_horizontal(held, n - 1)).alias("_held")).sort(
        "_at"
    )
    return flagged["_held"].rename("held")


def sample_users(users: pl.Series, max_users: int | None, seed: int) -> pl.Series:
    """All of `users` (sorted), or a seeded sample of `max_users` of them."""
    users = users.unique().sort()
    if max_users is None or max_users >= len(users):
        return users
    pick = np.sort(np.random.default_rng(seed).choice(len(users), max_users, replace=False))
    return users.gather(pick)


def split_test(rows: pl.DataFrame, share: float | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, test) of `rows` (user_id, item_id, ts, row): each user's latest rows held out."""
    held = latest_rows(rows, share)
    train = (
        rows.filter(~held)
        .with_columns(pl.lit(EVENT).alias("event"))
        .sort("user_id", "ts", "row")
        .select("user_id", "item_id", "ts", "event", "row")
    )
    test = rows.filter(held).sort("user_id", "ts", "row").select("user_id", "item_id", "ts")
    return train, test


def convert_grocery(folder: Path, *, max_users: int | None = None, seed: int = 0) -> Converted:
    """`interactions.tsv` (user_id, item_id, time in epoch seconds) and `item_meta.tsv`
    (item_id, i_category, ...): each user's latest 20% held out as test."""
    ids = {"user_id": pl.String, "item_id": pl.String}
    raw = pl.read_csv(folder / "interactions.tsv", separator="\t", schema_overrides=ids)
    raw = raw.with_row_index("row").with_columns(
        pl.from_epoch(pl.col("time").cast(pl.Int64), time_unit="s").alias("ts")
    )
    meta = pl.read_csv(
        folder / "item_meta.tsv",
        separator="\t",
        schema_overrides={"item_id": pl.String, "i_category": pl.String},
    )
    # the whole catalogue, sampled users or not: an item listed only because a sampled user
    # bought it in the test rows would give the test away
    catalogue = pl.concat([meta["item_id"], raw["item_id"]]).unique().to_frame("item_id")
    items = catalogue.join(
        meta.select("item_id", pl.col("i_category").alias("category")), on="item_id", how="left"
    ).sort("item_id")
    keep = sample_users(raw["user_id"], max_users, seed)
    raw = raw.filter(pl.col("user_id").is_in(keep.implode()))
    train, test = split_test(raw.select("user_id", "item_id", "ts", "row"), HOLDOUT_SHARE)
    return Converted(train, test, items, keep.to_frame("user_id"))


def read_sequences(path: Path) -> pl.DataFrame:
    """user_id, item_id, pos (0 = oldest), length of every `user item item ...` line."""
    users, items, pos, length = [], [], [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        seq = parts[1:]
        users.extend([parts[0]] * len(seq))
        items.extend(seq)
        pos.extend(range(len(seq)))
        length.extend([len(seq)] * len(seq))
    return pl.DataFrame(
        {"user_id": users, "item_id": items, "pos": pos, "length": length},
        schema={"user_id": pl.String, "item_id": pl.String, "pos": pl.Int64, "length": pl.Int64},
    )


def convert_sequences(
    folder: Path, stem: str, *, max_users: int | None = None, seed: int = 0, end: datetime = END_DAY
) -> Converted:
    """`<stem>.txt` (`user item item ...`, oldest first) and `<stem>_item2attributes.json`:
    one day per position, every sequence ending on `end`; each user's last item held out."""
    seq = read_sequences(folder / f"{stem}.txt")
    attrs = json.loads((folder / f"{stem}_item2attributes.json").read_text())
    # the whole catalogue, sampled users or not (see convert_grocery)
    catalogue = pl.concat([seq["item_id"], pl.Series(list(attrs), dtype=pl.String)]).unique().sort()
    tags = [[str(a) for a in attrs.get(i, [])] for i in catalogue.to_list()]
    items = pl.DataFrame(
        {"item_id": catalogue, "tags": tags},
        schema={"item_id": pl.String, "tags": pl.List(pl.String)},
    )
    keep = sample_users(seq["user_id"], max_users, seed)
    seq = seq.filter(pl.col("user_id").is_in(keep.implode()))
    rows = seq.with_row_index("row").with_columns(
        (pl.lit(end) - pl.duration(days=pl.col("length") - 1 - pl.col("pos"))).alias("ts")
    )
    train, test = split_test(rows.select("user_id", "item_id", "ts", "row"), None)
    return Converted(train, test, items, keep.to_frame("user_id"))


def convert(source: Source, datasets_dir: Path, *, max_users: int | None, seed: int) -> Converted:
    folder = datasets_dir / source.folder
    if source.stem is None:
        return convert_grocery(folder, max_users=max_users, seed=seed)
    return convert_sequences(folder, source.stem, max_users=max_users, seed=seed)


def available(source: Source, datasets_dir: Path) -> bool:
    folder = datasets_dir / source.folder
    if source.stem is None:
        return (folder / "interactions.tsv").is_file() and (folder / "item_meta.tsv").is_file()
    return (folder / f"{source.stem}.txt").is_file() and (
        folder / f"{source.stem}_item2attributes.json"
    ).is_file()


def write_work(conv: Converted, work: Path, strategy: str) -> Path:
    """The contract's three tables, the held-out rows and the config a user would write, in
    `work`; the config's path."""
    work.mkdir(parents=True, exist_ok=True)
    conv.train.drop("row").write_parquet(work / "interactions.parquet")
    conv.items.write_parquet(work / "items.parquet")
    conv.users.write_parquet(work / "users.parquet")
    conv.test.write_parquet(work / "test.parquet")  # never read by recengine
    config = work / "config.toml"
    config.write_text(
        "# written by bench/bench_real_quality.py: the config a user of recengine would write\n"
        "[data]\n"
        'interactions = "interactions.parquet"\n'
        'items = "items.parquet"\n'
        'users = "users.parquet"\n\n'
        "[split]\n"
        f'strategy = "{strategy}"\n\n'
        "[artifacts]\n"
        'root = "artifacts"\n'
    )
    return config


# ---------------------------------------------------------------------------------------------
# scoring


@dataclass(frozen=True)
class Space:
    """Contiguous indices of the data set's users and items (sorted ids), shared by the truth,
    the baselines and the mapped recengine lists."""

    users: pl.DataFrame  # user_id, idx
    items: pl.DataFrame  # item_id, idx

    @classmethod
    def of(cls, conv: Converted) -> Space:
        def index(s: pl.Series, name: str) -> pl.DataFrame:
            s = s.unique().sort()
            return pl.DataFrame({name: s, "idx": np.arange(len(s), dtype=np.int64)})

        return cls(
            index(conv.users["user_id"], "user_id"),
            index(
                pl.concat([conv.items["item_id"], conv.train["item_id"], conv.test["item_id"]]),
                "item_id",
            ),
        )

    @property
    def n_users(self) -> int:
        return self.users.height

    @property
    def n_items(self) -> int:
        return self.items.height

    def user_idx(self, ids: pl.Series) -> np.ndarray:
        return _lookup(ids, self.users, "user_id")

    def item_idx(self, ids: pl.Series) -> np.ndarray:
        return _lookup(ids, self.items, "item_id")


def _lookup(ids: pl.Series, table: pl.DataFrame, name: str) -> np.ndarray:
    """Index of each id in `table` (-1 for an unknown id)."""
    return (
        ids.cast(pl.String)
        .rename(name)
        .to_frame()
        .join(table, on=name, how="left", maintain_order="left")["idx"]
        .fill_null(-1)
        .to_numpy()
        .astype(np.int64)
    )


def indexed(rows: pl.DataFrame, space: Space) -> pl.DataFrame:
    """user_idx, item_idx, ts of `rows` (user_id, item_id, ts)."""
    return pl.DataFrame(
        {
            "user_idx": space.user_idx(rows["user_id"]),
            "item_idx": space.item_idx(rows["item_id"]),
            "ts": rows["ts"],
        }
    )


def seen_matrix(rows: pl.DataFrame, space: Space) -> sp.csr_matrix:
    from engine.evaluation.baselines import Interactions

    return Interactions.build(
        rows["user_idx"].to_numpy(), rows["item_idx"].to_numpy(), space.n_users, space.n_items
    ).matrix


def truth_of(held: pl.DataFrame, seen: sp.csr_matrix) -> Truth:
    """The held-out (user_idx, item_idx) pairs the user had not had in `seen`, binary."""
    from engine.evaluation.metrics import Truth

    u, i = held["user_idx"].to_numpy(), held["item_idx"].to_numpy()
    new = np.asarray(seen[u, i]).ravel() == 0
    return Truth.from_frame(
        pl.DataFrame(
            {"user_idx": u[new], "item_idx": i[new], "label": np.ones(int(new.sum()), np.int64)}
        )
    )


def scores(top: np.ndarray, truth: Truth) -> dict[str, float]:
    """Mean NDCG@10, recall@10 and HR@10 of `top` (rows aligned with `truth.users`)."""
    from engine.evaluation.metrics import ranking_metrics

    per = ranking_metrics(top, truth, [K])
    return {m: float(per[m].mean()) if len(per[m]) else float("nan") for m, _ in METRICS}


def lists_matrix(lists: pl.DataFrame, users: np.ndarray, k: int) -> np.ndarray:
    """(len(users), k) item index by rank of `lists` (user_idx, item_idx, rank from 1)."""
    from engine.evaluation.stage_lists import to_matrix

    ok = (lists["user_idx"] >= 0) & (lists["item_idx"] >= 0)
    return to_matrix(lists.filter(ok), users, k)


def without_seen(
    top: np.ndarray, users: np.ndarray, seen: sp.csr_matrix
) -> tuple[np.ndarray, float]:
    """`top` with each row's seen items dropped (the rest moved up), and the share of listed
    slots among the first K that held a seen item."""
    rr = np.repeat(users, top.shape[1]).reshape(top.shape)
    listed = top >= 0
    hit = np.zeros(top.shape, bool)
    hit[listed] = np.asarray(seen[rr[listed], top[listed]]).ravel() > 0
    first = listed[:, :K]
    share = float(hit[:, :K][first].mean()) if first.any() else 0.0
    cleaned = np.where(hit, -1, top)
    order = np.argsort(cleaned < 0, axis=1, kind="stable")
    return np.take_along_axis(cleaned, order, axis=1), share


# ---------------------------------------------------------------------------------------------
# baselines


GRID_EASE = (50.0, 250.0, 1250.0)
"""EASE's lambdas tried first; a best at either edge is followed by up to two more x5 steps
that way (each fit inverts a dense item x item matrix, so the grid stays short)."""
GRID_ALS = [
    {"factors": f, "regularization": r, "alpha": a}
    for f in (64.0, 128.0)
    for r in (1.0, 10.0)
    for a in (1.0, 10.0)
]


def baseline_top(
    name: str,
    params: dict[str, float | None],
    fit: pl.DataFrame,
    space: Space,
    users: np.ndarray,
    k: int,
) -> np.ndarray:
    """(len(users), k) lists of baseline `name` fitted on `fit` (user_idx, item_idx, ts), the
    fitted items of each user excluded."""
    from engine.evaluation.baselines import Interactions, make_baseline, top_items
    from engine.evaluation.config import EvaluationConfig

    x = Interactions.build(
        fit["user_idx"].to_numpy(), fit["item_idx"].to_numpy(), space.n_users, space.n_items
    )
    last = fit["ts"].max()

    def recent(days: float | None) -> sp.csr_matrix:
        if days is None:
            return x.matrix
        w = fit.filter(pl.col("ts") >= last - timedelta(days=days))
        return Interactions.build(
            w["user_idx"].to_numpy(), w["item_idx"].to_numpy(), space.n_users, space.n_items
        ).matrix

    scorer = make_baseline(name, x, recent, params, EvaluationConfig())
    return top_items(scorer, users, x.matrix, np.ones(space.n_items, bool), k)


def tune(
    name: str, fit: pl.DataFrame, truth: Truth, space: Space
) -> tuple[dict[str, float | None], list[dict[str, object]]]:
    """The best parameters of `name` by NDCG@10 on `truth` with models fitted on `fit`, and
    every setting tried with its score."""
    from engine.evaluation.baselines import GRIDS

    tried: list[dict[str, object]] = []

    def trial(params: dict[str, float | None]) -> float:
        t = time.perf_counter()
        v = scores(baseline_top(name, params, fit, space, truth.users, K), truth)["ndcg@10"]
        tried.append(
            {"params": params, "valid_ndcg@10": v, "seconds": round(time.perf_counter() - t, 1)}
        )
        print(f"    tune {name} {params}: valid NDCG@10 {v:.4f}", flush=True)
        return v

    if name == "ease":
        lams = list(GRID_EASE)
        got = {lam: trial({"lam": lam}) for lam in lams}
        for _ in range(2):
            best = max(got, key=got.__getitem__)
            if best == min(got):
                nxt = best / 5
            elif best == max(got):
                nxt = best * 5
            else:
                break
            got[nxt] = trial({"lam": nxt})
    else:
        for params in GRID_ALS if name == "als" else GRIDS[name]:
            trial(params)
    best = max(tried, key=lambda t: t["valid_ndcg@10"])  # type: ignore[arg-type,return-value]
    return best["params"], tried  # type: ignore[return-value]


def validation_slice(train: pl.DataFrame, share: float | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(fit, valid) of the training rows by the test protocol applied again."""
    held = latest_rows(train, share)
    return train.filter(~held), train.filter(held)


def run_baselines(
    conv: Converted,
    space: Space,
    train_idx: pl.DataFrame,
    truth: Truth,
    share: float | None,
    args: argparse.Namespace,
) -> dict[str, dict[str, object]]:
    """Each baseline tuned on the validation slice (unless --no-tune), refitted on every
    training row and scored on the test truth."""
    from engine.evaluation.baselines import default_params
    from engine.evaluation.config import EvaluationConfig

    out: dict[str, dict[str, object]] = {}
    if not args.no_tune:
        fit_rows, valid_rows = validation_slice(conv.train, share)
        fit_idx, valid_idx = indexed(fit_rows, space), indexed(valid_rows, space)
        valid_truth = truth_of(valid_idx, seen_matrix(fit_idx, space))
        if len(valid_truth.users) > args.tune_users:
            rows = np.sort(
                np.random.default_rng(args.seed).choice(
                    len(valid_truth.users), args.tune_users, replace=False
                )
            )
            valid_truth = valid_truth.subset(rows)
        print(
            f"  tuning on {len(valid_truth.users):,} validation users "
            f"({fit_idx.height:,} fit rows)",
            flush=True,
        )
    for name in ("popularity", "item_knn", "ease", "als"):
        t = time.perf_counter()
        tried: list[dict[str, object]] = []
        if args.no_tune:
            params = default_params(name, EvaluationConfig())
        else:
            params, tried = tune(name, fit_idx, valid_truth, space)
        t_tune = time.perf_counter() - t
        t = time.perf_counter()
        top = baseline_top(name, params, train_idx, space, truth.users, K)
        got = scores(top, truth)
        out[name] = {
            **got,
            "params": params,
            "tuned": not args.no_tune,
            "tried": tried,
            "tune_seconds": round(t_tune, 1),
            "test_seconds": round(time.perf_counter() - t, 1),
        }
        print(
            f"  {name} {params}: NDCG@10 {got['ndcg@10']:.4f} recall@10 "
            f"{got['recall@10']:.4f} HR@10 {got['hit_rate@10']:.4f}",
            flush=True,
        )
    return out


# ---------------------------------------------------------------------------------------------
# recengine: the nightly, the published lists, the stages


def nightly(config: Path) -> tuple[int, float]:
    """`recengine nightly --config <config> --force` on a fresh artifacts root: exit status
    and wall seconds."""
    import shutil

    root = config.parent / "artifacts"
    shutil.rmtree(root, ignore_errors=True)  # a fresh run: nothing resumed or reused
    cmd = [
        str(Path(sys.executable).with_name("recengine")),
        "nightly",
        "--config",
        str(config),
        "--force",
    ]
    if not Path(cmd[0]).is_file():
        cmd[:1] = [sys.executable, "-m", "engine.cli"]
    print(f"  $ {' '.join(cmd)}", flush=True)
    t = time.perf_counter()
    code = subprocess.run(cmd, check=False).returncode
    return code, time.perf_counter() - t


def published_lists(version: Path, space: Space) -> pl.DataFrame:
    """user_idx, item_idx, rank of the version's product lists, in the data set's indices."""
    parts = sorted((version / "recs" / "kind=product").glob("*.parquet"))
    lists = pl.concat([pl.read_parquet(p, columns=["user_id", "rank", "item_id"]) for p in parts])
    return pl.DataFrame(
        {
            "user_idx": space.user_idx(lists["user_id"]),
            "item_idx": space.item_idx(lists["item_id"]),
            "rank": lists["rank"].cast(pl.Int64),
        }
    )


def stage_figures(
    version: Path,
    config: Path,
    space: Space,
    truth: Truth,
    seen: sp.csr_matrix,
    args: argparse.Namespace,
    final_top: np.ndarray,
) -> dict[str, object]:
    """Candidate recall, the two-tower order over the whole corpus, the re-ranked candidates
    and the final lists of the published version, on (a sample of) the test users."""
    from engine.config import EngineConfig
    from engine.evaluation.baselines import Interactions, top_items
    from engine.evaluation.metrics import gains_of
    from engine.evaluation.stage_lists import ranked, to_matrix
    from engine.rerank.ranker import load_ranker
    from engine.scoring import ListScorer
    from engine.version import version_context
    from pipelines.config import load_config
    from pipelines.dataset import FeatureSet

    t0 = time.perf_counter()
    rows = np.arange(len(truth.users))
    sampled = len(rows) > args.stage_users
    if sampled:
        rows = np.sort(
            np.random.default_rng(args.seed).choice(rows, args.stage_users, replace=False)
        )
    tr = truth.subset(rows)
    cfg = load_config(config, EngineConfig)
    fs = FeatureSet.load(version)
    ctx = version_context(version, fs, cfg.candidates, use_gpu=cfg.index.use_gpu)
    scorer = ListScorer.build(ctx, load_ranker(version / "rerank"), cfg.rules, cfg.rerank)
    # engine index <-> data set index
    n_eng_items = fs.vocabs.item.size
    e2m_item = np.full(n_eng_items, -1, np.int64)
    e2m_item[1:] = space.item_idx(fs.vocabs.item.decode(pl.Series(np.arange(1, n_eng_items))))
    n_eng_users = fs.vocabs.user.size
    e2m_user = np.full(n_eng_users, -1, np.int64)
    e2m_user[1:] = space.user_idx(fs.vocabs.user.decode(pl.Series(np.arange(1, n_eng_users))))
    ids = space.users.sort("idx")["user_id"].gather(tr.users)
    eng_users = fs.vocabs.user.encode_series(ids).to_numpy().astype(np.int64)
    known = eng_users > 0

    # candidates and the re-ranker's order of them (seen items left out)
    pairs = []
    for a in range(0, int(known.sum()), cfg.jobs.user_chunk):
        chunk = np.sort(eng_users[known][a : a + cfg.jobs.user_chunk])
        scored = scorer.scored(chunk, k=cfg.jobs.k)
        pairs.append(
            pl.DataFrame(
                {
                    "user_idx": e2m_user[scored.users[scored.row]],
                    "item_idx": e2m_item[scored.items],
                    "score": np.asarray(scored.scores, np.float64),
                }
            )
        )
        print(
            f"    candidates and re-ranker scores: {a + len(chunk):,}/{int(known.sum()):,} users",
            flush=True,
        )
    cand = (
        pl.concat(pairs)
        if pairs
        else pl.DataFrame(schema={"user_idx": pl.Int64, "item_idx": pl.Int64, "score": pl.Float64})
    ).filter(pl.col("user_idx") >= 0, pl.col("item_idx") >= 0)
    u, i = cand["user_idx"].to_numpy(), cand["item_idx"].to_numpy()
    cand = cand.filter(pl.Series(np.asarray(seen[u, i]).ravel() == 0))
    order = ranked(cand)
    width = max(int(order["rank"].max() or 0), 1)
    cand_top = to_matrix(order, tr.users, width)
    hits = gains_of(cand_top, tr) > 0
    recall = float((hits.sum(1) / tr.n_relevant).mean())
    reranked = scores(to_matrix(order, tr.users, K), tr)

    # the two-tower order over every eligible product (seen items excluded)
    vectors = np.asarray(ctx.user_vectors)  # rows of the users the model knows
    uv = np.zeros((n_eng_users, vectors.shape[1]), np.float32)
    uv[: min(n_eng_users, len(vectors))] = vectors[:n_eng_users]
    seen_eng = Interactions.build(
        ctx.seen["user_idx"].to_numpy(), ctx.seen["item_idx"].to_numpy(), n_eng_users, n_eng_items
    ).matrix
    tt = np.full((len(tr.users), K), -1, np.int64)
    iv = np.zeros((n_eng_items, vectors.shape[1]), np.float32)
    got = np.asarray(ctx.item_vectors)
    iv[: min(n_eng_items, len(got))] = got[:n_eng_items]
    tt[known] = top_items(lambda r: uv[r] @ iv.T, eng_users[known], seen_eng, ctx.eligible, K)
    two_tower = scores(np.where(tt >= 0, e2m_item[np.maximum(tt, 0)], -1), tr)
    final = scores(final_top[rows], tr)
    return {
        "users": len(tr.users),
        "sampled": bool(sampled),
        "of_users": len(truth.users),
        "candidate_recall": recall,
        "mean_candidates": float((cand_top >= 0).sum(1).mean()),
        "two_tower": two_tower,
        "reranked": reranked,
        "final": final,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def manifest_of(version: Path) -> dict[str, Any]:
    path = version / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


# ---------------------------------------------------------------------------------------------
# one data set


def run_dataset(source: Source, args: argparse.Namespace, report: Report) -> dict[str, object]:
    t0 = time.perf_counter()
    print(f"\n=== {source.name}: {source.label}", flush=True)
    conv = convert(source, args.datasets_dir, max_users=args.max_users, seed=args.seed)
    work = args.work / source.name
    config = write_work(conv, work, source.strategy)
    share = HOLDOUT_SHARE if source.strategy == "holdout" else None
    space = Space.of(conv)
    train_idx = indexed(conv.train, space)
    seen = seen_matrix(train_idx, space)
    truth = truth_of(indexed(conv.test, space), seen)
    test_users = conv.test["user_id"].n_unique()
    detail: dict[str, object] = {
        "label": source.label,
        "config": str(config),
        "strategy": source.strategy,
        "users": conv.users.height,
        "items": conv.items.height,
        "train_rows": conv.train.height,
        "test_rows": conv.test.height,
        "test_users": test_users,
        "scored_users": len(truth.users),
        "users_left_out": test_users - len(truth.users),
        "relevant_items": int(truth.n_relevant.sum()),
        "max_users": args.max_users,
        "published": PUBLISHED.get(source.name),
    }
    print(
        f"  {conv.users.height:,} users, {conv.items.height:,} items, {conv.train.height:,} "
        f"training rows, {conv.test.height:,} held out; scored: {len(truth.users):,} users "
        f"({detail['users_left_out']:,} whose held-out items were all in their training "
        f"rows left out); work folder {work}",
        flush=True,
    )

    methods: dict[str, dict[str, object]] = {}
    failed = False
    if args.skip_nightly:
        code, wall = 0, None
    else:
        code, wall = nightly(config)
    version = work / "artifacts" / "current"
    detail["nightly"] = {"exit": code, "seconds": None if wall is None else round(wall, 1)}
    if code or not version.is_dir():
        print(f"  nightly failed (exit {code}) or published nothing at {version}", flush=True)
        failed = True
    else:
        version = version.resolve()
        manifest = manifest_of(version)
        figs = manifest.get("metrics") or manifest.get("figures") or {}
        detail["nightly"] |= {  # type: ignore[operator]
            "version": str(version),
            "stage_seconds": manifest.get("seconds"),
            "rerank_lists": (figs.get("rerank") or {}).get("lists"),
            "rerank": figs.get("rerank"),
            "train": figs.get("train"),
            "index": figs.get("index"),
        }
        lists = published_lists(version, space)
        width = max(int(lists["rank"].max() or 0), K)
        full = lists_matrix(lists, truth.users, width)
        methods["final"] = scores(full, truth)
        cleaned, seen_share = without_seen(full, truth.users, seen)
        methods["final"]["seen_share@10"] = seen_share
        methods["final"]["users_with_list"] = int((full[:, 0] >= 0).sum())
        if seen_share > 0:
            methods["final_unseen"] = scores(cleaned, truth)
        print(
            f"  recengine final: NDCG@10 {methods['final']['ndcg@10']:.4f} recall@10 "
            f"{methods['final']['recall@10']:.4f} HR@10 {methods['final']['hit_rate@10']:.4f}"
            f" ({seen_share:.1%} of the first {K} slots hold a training item)",
            flush=True,
        )
        if not args.no_stages:
            detail["stages"] = stage_figures(version, config, space, truth, seen, args, full)
    methods |= run_baselines(conv, space, train_idx, truth, share, args)
    detail["methods"] = methods
    base = {n: methods[n] for n in ("popularity", "item_knn", "ease", "als")}
    best = max(base, key=lambda n: base[n]["ndcg@10"])  # type: ignore[arg-type,return-value]
    detail["best_baseline"] = best
    if "final" in methods:
        best_v = float(base[best]["ndcg@10"])  # type: ignore[arg-type]
        detail["final_over_best"] = (
            float(methods["final"]["ndcg@10"])  # type: ignore[arg-type]
            / best_v
            if best_v
            else None
        )
    detail["seconds"] = round(time.perf_counter() - t0, 1)
    detail["failed"] = failed
    add_figures(source, detail, report)
    print_table(source, detail)
    return detail


LABELS = {
    "final": "recengine final lists",
    "final_unseen": "recengine final, seen dropped",
    "popularity": "popularity",
    "item_knn": "item-kNN",
    "ease": "EASE",
    "als": "ALS",
}


def add_figures(source: Source, d: dict[str, Any], report: Report) -> None:
    """The data set's figures into the report (each baseline's parameters as its note)."""
    m, best = d["methods"], d["best_baseline"]
    best_v = m[best]["ndcg@10"]
    for name, v in m.items():
        for key, label in METRICS:
            ratio = (
                (f"best baseline ({LABELS[best]})", v[key] / m[best][key])
                if name == "final" and m[best][key]
                else None
            )
            report.add(
                f"{source.name}: {LABELS[name]} {label}",
                v[key],
                "",
                ratio=ratio,
                note=json.dumps(v.get("params")) if "params" in v else "",
            )
    if st := d.get("stages"):
        note = (
            f"sample of {st['users']:,} of {st['of_users']:,} test users"
            if st["sampled"]
            else f"all {st['users']:,} test users"
        )
        report.add(f"{source.name}: stage candidate recall", st["candidate_recall"], "", note=note)
        for key, label in (
            ("two_tower", "two-tower order (full corpus)"),
            ("reranked", "re-ranked candidates"),
            ("final", "final lists"),
        ):
            report.add(
                f"{source.name}: stage {label} NDCG@10",
                st[key]["ndcg@10"],
                "",
                ratio=("best baseline", st[key]["ndcg@10"] / best_v) if best_v else None,
                note=note,
            )
    n = d["nightly"]
    if n.get("seconds") is not None:
        report.add(
            f"{source.name}: nightly wall time",
            n["seconds"],
            "s",
            note=f"re-ranker training lists {n.get('rerank_lists')}",
        )
    if n.get("rerank_lists") is not None:
        report.add(f"{source.name}: re-ranker training lists", n["rerank_lists"], "lists")


def print_table(source: Source, d: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    m, best = d["methods"], d["best_baseline"]
    sub = f" (--max-users {d['max_users']})" if d["max_users"] else ""
    t = Table(
        title=f"{source.label}{sub}: {d['scored_users']:,} test users, full ranking over "
        f"{d['items']:,} items, seen items excluded",
        title_justify="left",
    )
    for col in ("method", "NDCG@10", "recall@10", "HR@10", "/ best baseline", "notes"):
        t.add_column(col, justify="left" if col in ("method", "notes") else "right")

    def row(label: str, v: dict[str, Any], note: str = "") -> None:
        ratio = v["ndcg@10"] / m[best]["ndcg@10"] if m[best]["ndcg@10"] else float("nan")
        t.add_row(
            label,
            f"{v['ndcg@10']:.4f}",
            f"{v['recall@10']:.4f}",
            f"{v['hit_rate@10']:.4f}",
            f"{ratio:.2f}x",
            note,
        )

    n = d["nightly"]
    for name, v in m.items():
        note = json.dumps(v["params"]) if "params" in v else ""
        if name == "final":
            wall = "not run" if n["seconds"] is None else f"{n['seconds']:.0f} s"
            note = (
                f"nightly {wall}, re-ranker lists {n.get('rerank_lists')}, "
                f"{v['seen_share@10']:.1%} seen in top {K}"
            )
        row(LABELS[name] + (" (best)" if name == best else ""), v, note)
    if st := d.get("stages"):
        note = (
            f"sample {st['users']:,}/{st['of_users']:,} users"
            if st["sampled"]
            else f"{st['users']:,} users"
        )
        t.add_row(
            "stage: candidate recall",
            "",
            f"{st['candidate_recall']:.4f}",
            "",
            "",
            f"{note}, {st['mean_candidates']:.0f} candidates a user",
        )
        for key, label in (
            ("two_tower", "stage: two-tower (full corpus)"),
            ("reranked", "stage: re-ranked candidates"),
            ("final", "stage: final lists"),
        ):
            row(label, st[key], note)
    for name, v in (d["published"] or {}).items():
        t.add_row(
            f"published {name}",
            f"{v['ndcg@10']:.4f}",
            "",
            f"{v['hit_rate@10']:.4f}" if "hit_rate@10" in v else "",
            "",
            "S3-Rec paper's table (all test users, earlier items excluded)",
        )
    Console(width=160).print(t)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--datasets", default=",".join(DATASETS), help="comma-separated, of " + ", ".join(DATASETS)
    )
    ap.add_argument("--quick", action="store_true", help="toys only")
    ap.add_argument("--datasets-dir", type=Path, default=Path("../shared/datasets"))
    ap.add_argument(
        "--work",
        type=Path,
        default=OUT / "real",
        help="work folder: <work>/<data set>/ holds the tables, config, artifacts",
    )
    ap.add_argument(
        "--max-users",
        type=int,
        default=None,
        help="a seeded sample of this many users, all their rows (quick checks)",
    )
    ap.add_argument(
        "--no-tune",
        action="store_true",
        help="baselines with the [evaluation] defaults, no validation tuning",
    )
    ap.add_argument(
        "--tune-users", type=int, default=5000, help="validation users sampled for baseline tuning"
    )
    ap.add_argument(
        "--stage-users", type=int, default=5000, help="test users sampled for the stage figures"
    )
    ap.add_argument("--no-stages", action="store_true", help="skip the stage figures")
    ap.add_argument(
        "--skip-nightly",
        action="store_true",
        help="score the version already published in the work folder",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    names = ["toys"] if args.quick else [n.strip() for n in args.datasets.split(",") if n.strip()]
    if unknown := [n for n in names if n not in DATASETS]:
        ap.error(f"unknown data sets {unknown}; known: {', '.join(DATASETS)}")
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    report = Report("real_quality", args)
    report.details["datasets"] = {}
    failed = False
    for name in names:
        source = DATASETS[name]
        if not available(source, args.datasets_dir):
            print(
                f"\n=== {name}: skipped, {args.datasets_dir / source.folder} does not hold "
                f"its files",
                flush=True,
            )
            report.details["datasets"][name] = {"skipped": "data set folder absent"}
            continue
        detail = run_dataset(source, args, report)
        report.details["datasets"][name] = detail
        failed |= bool(detail["failed"])
        report.write(args.out)
    report.finish(args.out)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
