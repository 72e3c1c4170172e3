"""The ad auction with a per-user shortlist (`[auction] candidates`) against the same auction
over every ad in flight, on a version's features and pCTR model: time per user and how much
of the full auction's lists the shortlist keeps (pairs in common, eCPM captured).

    python bench/bench_ad_shortlist.py --config DIR/bench.toml --version VERSION_DIR
        [--users 1000] [--candidates 120]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import numpy as np
from harness import Report

from engine.ads.lists import Inventory, ad_lists
from engine.ads.log import logged_ads
from engine.ads.pctr import Pctr
from engine.config import EngineConfig
from pipelines.config import load_config
from pipelines.dataset import FeatureSet
from pipelines.validate import validate_tables


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--version", type=Path, required=True, help="a version (or staging) folder")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--candidates", type=int, default=120)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    cfg = load_config(args.config, EngineConfig)
    fs = FeatureSet.load(args.version)
    model = Pctr.load(args.version / "ads")
    log = logged_ads(validate_tables(cfg.data, cfg.columns))
    users = fs.users["user_idx"].to_numpy().astype(np.int64)
    users = np.sort(np.random.default_rng(0).choice(users[users > 0], args.users, replace=False))
    report = Report("ad_shortlist", args)
    ads = len(Inventory.at(fs, fs.as_of).item_idx)
    lists, secs = {}, {}
    for n in (0, args.candidates):
        auction = cfg.auction.model_copy(update={"candidates": n})
        t0 = time.perf_counter()
        lists[n], _ = ad_lists(users, fs, model, log, auction, when=fs.as_of)
        secs[n] = time.perf_counter() - t0
    full, short = lists[0], lists[args.candidates]
    common = full.join(short, on=["user_idx", "item_idx"], how="inner").height
    report.add(f"auction over all {ads:,} ads in flight", secs[0] / args.users * 1e3, "ms/user")
    report.add(
        f"auction over a {args.candidates}-ad shortlist",
        secs[args.candidates] / args.users * 1e3,
        "ms/user",
        ratio=("faster", secs[0] / secs[args.candidates]),
    )
    report.add("listed (user, ad) pairs the shortlist keeps", common / max(full.height, 1), "")
    report.add(
        "eCPM of the lists, shortlist / full",
        float(short["ecpm"].sum()) / max(float(full["ecpm"].sum()), 1e-12),
        "",
    )
    report.finish()


if __name__ == "__main__":
    main()
