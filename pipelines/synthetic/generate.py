"""Write a generated data set: the three contract tables plus the hidden ground truth."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from pipelines.config import write_data_config
from pipelines.errors import ConfigError
from pipelines.io import write_parquet
from pipelines.progress import Report, silent
from pipelines.synthetic.ads import DAY, Campaigns, draw_campaigns, sample_ad_log
from pipelines.synthetic.events import (
    EVENT_NAMES,
    Bursts,
    Events,
    Timeline,
    sample_impressions,
    sample_sessions,
)
from pipelines.synthetic.world import (
    AGE_BUCKETS,
    COUNTRIES,
    GENDERS,
    Chains,
    World,
    build_chains,
    build_world,
    item_titles,
)

TS = pl.Datetime("us")


@dataclass(frozen=True)
class GeneratorSpec:
    """What to generate. Same spec and seed, same files."""

    users: int = 2_000
    items: int = 1_000
    interactions: int = 60_000
    days: int = 90
    end: datetime = datetime(2026, 10, 1)
    """End of the simulated span (naive UTC)."""
    ad_share: float = 0.03
    late_item_share: float = 0.10
    late_user_share: float = 0.15
    unavailable_share: float = 0.03
    dim: int = 16
    tau: float = 1.5
    seed: int = 0
    activity: str = "weekly"
    """"weekly": each user's events spread over the user's whole tenure. "bursty": each user's
    events fall into 1 to `bursts` bursts of up to `burst_days` days placed at random over the
    span, and products form chains whose successors users pick next (the shape of shop and
    rating-site logs)."""
    bursts: int = 3
    """bursty: the most bursts a user has."""
    single_burst_share: float = 0.2
    """bursty: share of users with one burst; the others have 2 to `bursts`, uniformly."""
    burst_days: float = 2.0
    """bursty: the longest burst; lengths are uniform between 2 hours and this."""
    chain_share: float = 0.8
    """bursty: share of products in a chain (a series or complements)."""
    chain_max: int = 6
    """bursty: chains hold 2 to this many products."""
    chain_follow: float = 0.5
    """bursty: probability that the view after a chained item is its successor."""

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)


ACTIVITIES = ("weekly", "bursty")
BURSTY_FIELDS = (
    "bursts",
    "single_burst_share",
    "burst_days",
    "chain_share",
    "chain_max",
    "chain_follow",
)
"""Settings that only the bursty activity reads (left out of a weekly set's meta.json)."""


def check_spec(spec: GeneratorSpec, where: Path | str = "generator settings") -> GeneratorSpec:
    """Raise a `ConfigError` naming `where` for settings out of range."""
    problems = []
    if spec.activity not in ACTIVITIES:
        problems.append(f"activity: expected one of {list(ACTIVITIES)}, got {spec.activity!r}")
    if spec.bursts < 1:
        problems.append(f"bursts: expected >= 1, got {spec.bursts}")
    if not spec.burst_days * 24 > 2:
        problems.append(f"burst_days: expected more than 2 hours, got {spec.burst_days}")
    if not 0 <= spec.single_burst_share <= 1:
        problems.append(f"single_burst_share: expected 0..1, got {spec.single_burst_share}")
    if not 0 <= spec.chain_share <= 1:
        problems.append(f"chain_share: expected 0..1, got {spec.chain_share}")
    if spec.chain_max < 2:
        problems.append(f"chain_max: expected >= 2, got {spec.chain_max}")
    if not 0 <= spec.chain_follow < 1:
        problems.append(f"chain_follow: expected 0 <= x < 1, got {spec.chain_follow}")
    if spec.activity == "bursty" and spec.burst_days >= spec.days:
        problems.append(f"burst_days ({spec.burst_days}) must be shorter than days ({spec.days})")
    if problems:
        raise ConfigError(where, "; ".join(problems))
    return spec


def load_spec(path: Path, **overrides: object) -> GeneratorSpec:
    """Read generator settings from a TOML file (keys are `GeneratorSpec` fields)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "generator settings file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"not valid TOML: {exc}") from None
    known = {f.name: f.type for f in fields(GeneratorSpec)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(path, f"unknown key(s) {unknown}; known: {sorted(known)}")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    for k, v in raw.items():
        default = getattr(GeneratorSpec, k)
        if isinstance(v, datetime) and v.tzinfo is not None:
            raw[k] = v.replace(tzinfo=None)
        elif not isinstance(v, type(default)) and not (
            isinstance(default, float) and isinstance(v, int)
        ):
            raise ConfigError(path, f"{k}: expected {type(default).__name__}, got {v!r}")
    return check_spec(GeneratorSpec(**raw), path)


@dataclass(frozen=True)
class GeneratedPaths:
    interactions: Path
    items: Path
    users: Path
    ground_truth: Path
    n_interactions: int


def _timeline(
    spec: GeneratorSpec, world: World, camp: Campaigns, rng: np.random.Generator
) -> tuple[Timeline, np.ndarray]:
    """The timeline and each user's signup (seconds from the span's start)."""
    span = spec.days * DAY
    n_u, n_i = len(world.user_vecs), len(world.item_vecs)
    late_u = rng.random(n_u) < spec.late_user_share
    signup = np.where(late_u, rng.random(n_u) * span * 0.95, -rng.random(n_u) * 2 * 365 * DAY)
    late_i = rng.random(n_i) < spec.late_item_share
    created = np.where(late_i, rng.random(n_i) * span * 0.95, -rng.random(n_i) * 365 * DAY)
    created[camp.ads] = np.minimum(created[camp.ads], camp.start_day * DAY)
    user_from = np.maximum(signup, 0.0)
    activity = np.exp(rng.normal(0, 1.0, n_u)) * (span - user_from) / span
    if spec.activity == "bursty":
        return _bursty_timeline(spec, span, user_from, created, rng), signup
    return Timeline(
        span=span, user_from=user_from, item_from=created, activity=activity / activity.sum()
    ), signup


def _bursty_timeline(
    spec: GeneratorSpec,
    span: float,
    user_from: np.ndarray,
    item_from: np.ndarray,
    rng: np.random.Generator,
) -> Timeline:
    """One burst for a `spec.single_burst_share` of the users, 2 to `spec.bursts` for the
    others; each 2 hours to `spec.burst_days` long, starting uniformly between the user's signup
    and the span's end. A user's activity is lognormal times the number of bursts."""
    n_u = len(user_from)
    count = np.where(
        rng.random(n_u) < spec.single_burst_share,
        1,
        rng.integers(min(2, spec.bursts), spec.bursts + 1, n_u),
    )
    first = np.concatenate([[0], np.cumsum(count)[:-1]])
    owner = np.repeat(np.arange(n_u), count)
    length = 2 * 3600 + rng.random(len(owner)) * (spec.burst_days * DAY - 2 * 3600)
    latest = np.maximum(span - 4 * 3600 - length, 0.0)  # a burst ends by span - 4 h
    lo = np.minimum(user_from[owner], latest)
    start = lo + rng.random(len(owner)) * (latest - lo)
    activity = np.exp(rng.normal(0, 1.0, n_u)) * count
    return Timeline(
        span=span,
        user_from=user_from,
        item_from=item_from,
        activity=activity / activity.sum(),
        bursts=Bursts(first=first, count=count, start=start, length=length),
    )


def _epoch(spec: GeneratorSpec, seconds: np.ndarray) -> pl.Series:
    base = (
        int(spec.start.timestamp() * 1_000_000)
        if spec.start.tzinfo
        else int((spec.start - datetime(1970, 1, 1)).total_seconds() * 1_000_000)
    )
    return pl.Series((base + np.round(seconds * 1e6)).astype(np.int64)).cast(TS)


def _items_frame(
    spec: GeneratorSpec,
    world: World,
    camp: Campaigns,
    tl: Timeline,
    prices: np.ndarray,
    rng: np.random.Generator,
) -> pl.DataFrame:
    n = len(world.item_vecs)
    titles = item_titles(world, rng)
    ids = np.where(world.item_is_ad, "A", "P")
    camp_id: list[str | None] = [None] * n
    for a, c in zip(camp.ads, camp.campaign, strict=True):
        camp_id[a] = f"C{c:05d}"
    bid, budget = np.full(n, np.nan), np.full(n, np.nan)
    bid[camp.ads], budget[camp.ads] = camp.bid, camp.daily_budget
    start, end = np.full(n, np.nan), np.full(n, np.nan)
    start[camp.ads], end[camp.ads] = camp.start_day * DAY, camp.end_day * DAY
    is_ad = pl.Series(world.item_is_ad)
    return pl.DataFrame(
        {
            "item_id": [f"{p}{i:07d}" for p, i in zip(ids, range(n), strict=True)],
            "kind": np.where(world.item_is_ad, "ad", "product"),
            "title": titles,
            "category": np.array(world.leaf_names)[world.item_leaf],
            "brand": np.array(world.brand_names)[world.item_brand],
            "price": prices,
            "tags": [t.split()[1:3] for t in titles],
            "available": rng.random(n) >= spec.unavailable_share,
            "created_ts": _epoch(spec, tl.item_from),
            "campaign_id": pl.Series(camp_id, dtype=pl.String),
            "bid": pl.Series(bid).fill_nan(None),
            "daily_budget": pl.Series(budget).fill_nan(None),
            "start_ts": _epoch(spec, np.nan_to_num(start)),
            "end_ts": _epoch(spec, np.nan_to_num(end)),
        }
    ).with_columns(
        [pl.when(is_ad).then(pl.col(c)).otherwise(None).alias(c) for c in ("start_ts", "end_ts")]
    )


def _users_frame(spec: GeneratorSpec, world: World, signup: np.ndarray) -> pl.DataFrame:
    a = world.user_attrs
    return pl.DataFrame(
        {
            "user_id": np.arange(1, len(world.user_vecs) + 1, dtype=np.int64),
            "age_bucket": np.array(AGE_BUCKETS)[a["age_bucket"]],
            "gender": np.array(GENDERS)[a["gender"]],
            "country": np.array(COUNTRIES)[a["country"]],
            "signup_ts": _epoch(spec, signup),
        }
    )


def _interactions_frame(spec: GeneratorSpec, ev: Events, items: pl.DataFrame) -> pl.DataFrame:
    order = np.argsort(ev.t, kind="stable")
    return pl.DataFrame(
        {
            "user_id": (ev.user[order] + 1).astype(np.int64),
            "item_id": items["item_id"].gather(ev.item[order]),
            "ts": _epoch(spec, ev.t[order]),
            "event": pl.Series(np.array(EVENT_NAMES)[ev.event[order]]),
            "value": pl.Series(ev.value[order]).fill_nan(None),
            "propensity": pl.Series(ev.propensity[order]).fill_nan(None),
        }
    )


def _write_truth(
    out: Path,
    spec: GeneratorSpec,
    world: World,
    users: pl.DataFrame,
    items: pl.DataFrame,
    chains: Chains | None,
) -> Path:
    gt = out / "ground_truth"
    d = world.dim
    write_parquet(
        pl.DataFrame(
            {
                "user_id": users["user_id"],
                "factor": pl.Series(world.user_vecs).cast(pl.Array(pl.Float32, d)),
                "drift": pl.Series(world.user_drift).cast(pl.Array(pl.Float32, d)),
            }
        ),
        gt / "users.parquet",
    )
    gt_items = pl.DataFrame(
        {
            "item_id": items["item_id"],
            "factor": pl.Series(world.item_vecs).cast(pl.Array(pl.Float32, d)),
            "bias": world.item_bias,
        }
    )
    if chains is not None:
        ids = items["item_id"]
        gt_items = gt_items.with_columns(
            chain=pl.Series(chains.chain).cast(pl.Int64).replace(-1, None),
            chain_pos=pl.Series(chains.position).cast(pl.Int64).replace(-1, None),
            next_item_id=ids.gather(np.maximum(chains.successor, 0)).scatter(
                np.flatnonzero(chains.successor < 0), None
            ),
        )
    write_parquet(gt_items, gt / "items.parquet")
    settings = asdict(spec)
    if spec.activity == "weekly":  # the weekly meta.json keeps its original keys
        for k in ("activity", *BURSTY_FIELDS):
            del settings[k]
    meta = {
        "formula": "util(u,i,t) = (factor_u + f(t) * drift_u) . factor_i / tau + bias_i; "
        "f(t) = (t - start) / (end - start)",
        "tau": spec.tau,
        "start": spec.start.isoformat(),
        "end": spec.end.isoformat(),
    }
    if chains is not None:
        meta |= {
            "activity": "bursty",
            "chain_follow": chains.follow,
            "chains": "items.parquet: chain, chain_pos, next_item_id (the successor). After a "
            "view of item h, the next view is next_item_id(h) with probability "
            "chain_follow, else the usual pick.",
            "oracle": "p(i | u, t, h) = (1 - chain_follow) * softmax_i(util(u,i,t)) + "
            "chain_follow * [i = next(h)], h = the user's last view before t; as a "
            "utility: util(u,next(h),t) becomes log(exp(util(u,next(h),t)) + "
            "chain_follow / (1 - chain_follow) * sum_i exp(util(u,i,t))), the rest "
            "is unchanged (GroundTruth.utility(rows, at, last_items=...)).",
        }
    meta["spec"] = {
        k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in settings.items()
    }
    (gt / "meta.json").write_text(json.dumps(meta, indent=2))
    return gt


GENERATE_STEPS = 7


def generate(spec: GeneratorSpec, out: Path, *, report: Report = silent) -> GeneratedPaths:
    """Generate users, items (products and ads), interactions and the ground truth into `out`,
    plus a `config.toml` (a week each for validation and test; for bursty users each user's
    latest 20% instead) unless one is there already."""
    out = Path(out)
    check_spec(spec)
    rng = np.random.default_rng(spec.seed)
    report("latent world")
    world = build_world(
        spec.users, spec.items, ad_share=spec.ad_share, dim=spec.dim, tau=spec.tau, rng=rng
    )
    camp = draw_campaigns(world, spec.days, rng)
    tl, signup = _timeline(spec, world, camp, rng)
    top_level = np.exp(rng.normal(3.0, 0.6, int(world.leaf_top.max()) + 1))
    prices = (
        np.round(
            top_level[world.leaf_top[world.item_leaf]]
            * np.exp(rng.normal(0, 0.5, len(world.item_vecs))),
            2,
        )
        + 0.99
    )
    chains = None
    if spec.activity == "bursty":
        chains = build_chains(
            world, share=spec.chain_share, max_len=spec.chain_max, follow=spec.chain_follow, rng=rng
        )
    n = spec.interactions
    report("browsing sessions")
    sessions = sample_sessions(world, tl, prices, int(0.38 * n), rng, chains)
    report("product impressions")
    impressions = sample_impressions(world, tl, int(0.40 * n), rng)
    report("ad impressions")
    ads = sample_ad_log(world, tl, camp, int(0.095 * n), rng)
    report("items and users")
    items = _items_frame(spec, world, camp, tl, prices, rng)
    users = _users_frame(spec, world, signup)
    report("interactions")
    inter = _interactions_frame(spec, Events.concat([sessions, impressions, ads]), items)
    report("writing files")
    paths = GeneratedPaths(
        interactions=write_parquet(inter, out / "interactions.parquet"),
        items=write_parquet(items, out / "items.parquet"),
        users=write_parquet(users, out / "users.parquet"),
        ground_truth=_write_truth(out, spec, world, users, items, chains),
        n_interactions=inter.height,
    )
    if not (out / "config.toml").exists():
        # bursty users are scattered over the period: a global week would hold few of them,
        # so each user's own latest share is held out instead
        split: dict[str, object] = (
            {"strategy": "holdout", "holdout_share": 0.2}
            if spec.activity == "bursty"
            else {"valid_days": 7, "test_days": 7}
        )
        write_data_config(
            out / "config.toml",
            split=split,
            ground_truth="ground_truth",
            comment="Generated by `recengine generate`.",
        )
    return paths
