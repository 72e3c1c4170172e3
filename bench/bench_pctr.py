"""pCTR quality: AUC, log loss and expected calibration error (ECE) of the raw LightGBM
probabilities and of the isotonic-calibrated ones, on the test window's logged ad impressions.

The model learns on the validation window's impressions with features as of its start (past
click rates from the log before it); it is scored on the test window with features as of the
test start.

    python bench/bench_pctr.py --config data_samples/config.toml
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from engine.ads.lists import Inventory, ad_lists
from engine.ads.log import ad_features, ad_impressions
from engine.ads.pctr import pctr_report, train_pctr
from engine.config import EngineConfig
from pipelines.config import load_config
from pipelines.dataset import build_features
from pipelines.validate import validate_tables


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="data_samples/config.toml")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    cfg = load_config(args.config, EngineConfig)
    tables = validate_tables(cfg.data, cfg.columns)
    fit_fs, test_fs = build_features(cfg, window="train"), build_features(cfg, window="valid")
    cut, test_cut = fit_fs.valid_start, fit_fs.test_start

    def log(start, end):
        return ad_impressions(tables.interactions, tables.items, start=start, end=end)

    fit = ad_features(log(cut, test_cut), log(None, cut), fit_fs)
    test = ad_features(log(test_cut, None), log(None, test_cut), test_fs)
    model = train_pctr(fit, cfg.ads)
    r = pctr_report(model, test)
    print(
        f"fit on {fit.height:,} impressions (click rate {fit['clicked'].mean():.4f}), "
        f"{model.booster.best_iteration} trees; test {int(r['rows']):,} impressions "
        f"(click rate {r['click_rate']:.4f})"
    )
    print(f"  AUC {r['auc']:.4f}")
    print(f"  log loss: raw {r['logloss_raw']:.4f}, calibrated {r['logloss_calibrated']:.4f}")
    print(
        f"  ECE (15 equal-count bins): raw {r['ece_raw']:.4f}, calibrated {r['ece_calibrated']:.4f}"
    )

    users = test_fs.users["user_idx"].to_numpy().astype(np.int64)
    users = users[users > 0]
    t = time.perf_counter()
    lists, spent = ad_lists(users, test_fs, model, log(None, test_cut), cfg.auction, when=test_cut)
    seconds = time.perf_counter() - t
    inv = Inventory.at(test_fs, test_cut)
    budget = sum(v for v in inv.budget.values() if np.isfinite(v))
    print(
        f"ad lists at {test_cut:%Y-%m-%d}: {len(inv.item_idx)} ads in flight in "
        f"{len(inv.budget)} campaigns; {lists['user_idx'].n_unique():,} of {len(users):,} users "
        f"get an ad ({lists.height:,} slots, mean eCPM {lists['ecpm'].mean():.2f}) in "
        f"{seconds:.1f} s; expected spend {sum(spent.values()):.0f} of {budget:.0f} budget, "
        f"largest overshoot of a campaign {max(spent[c] - inv.budget[c] for c in spent):+.2f}"
    )


if __name__ == "__main__":
    main()
