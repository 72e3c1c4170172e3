"""pCTR quality: AUC, log loss and expected calibration error (ECE) of the raw LightGBM
probabilities and of the isotonic-calibrated ones, on the test window's logged ad impressions.

The model learns on the validation window's impressions with features as of its start (past
click rates from the log before it); it is scored on the test window with features as of the
test start.

    python bench/bench_pctr.py --config data_samples/config.toml
"""

from __future__ import annotations

import argparse
import warnings

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

    def log(start, end):  # noqa: ANN001, ANN202
        return ad_impressions(tables.interactions, tables.items, start=start, end=end)

    fit = ad_features(log(cut, test_cut), log(None, cut), fit_fs)
    test = ad_features(log(test_cut, None), log(None, test_cut), test_fs)
    model = train_pctr(fit, cfg.ads)
    r = pctr_report(model, test)
    print(f"fit on {fit.height:,} impressions (click rate {fit['clicked'].mean():.4f}), "
          f"{model.booster.best_iteration} trees; test {int(r['rows']):,} impressions "
          f"(click rate {r['click_rate']:.4f})")
    print(f"  AUC {r['auc']:.4f}")
    print(f"  log loss: raw {r['logloss_raw']:.4f}, calibrated {r['logloss_calibrated']:.4f}")
    print(f"  ECE (15 equal-count bins): raw {r['ece_raw']:.4f}, calibrated "
          f"{r['ece_calibrated']:.4f}")


if __name__ == "__main__":
    main()
