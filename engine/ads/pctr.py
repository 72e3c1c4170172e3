"""pCTR: a LightGBM binary model over logged ad impressions, calibrated by isotonic regression
on a held-out slice. The model is saved in LightGBM's text format and the calibration as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
from sklearn.metrics import log_loss, roc_auc_score

from engine.ads.calibration import Calibrator, expected_calibration_error
from engine.ads.config import AdsConfig
from engine.ads.log import FEATURES
from engine.rerank.trees import dense
from pipelines.errors import ArtifactError
from pipelines.io import atomic_path

MODEL_FILE = "pctr.txt"
CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Pctr:
    """A trained pCTR model and its calibration."""

    booster: lgb.Booster
    calibrator: Calibrator

    def raw(self, frame: pl.DataFrame) -> np.ndarray:
        return dense(
            self.booster.predict(_x(frame), num_iteration=self.booster.best_iteration or None)
        )

    def __call__(self, frame: pl.DataFrame) -> np.ndarray:
        """Calibrated click probabilities of the rows of `frame` (FEATURES columns)."""
        return self.calibrator(self.raw(frame))

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        with atomic_path(folder / MODEL_FILE) as tmp:
            self.booster.save_model(str(tmp), num_iteration=self.booster.best_iteration or None)
        self.calibrator.save(folder / CALIBRATION_FILE)

    @classmethod
    def load(cls, folder: Path) -> Pctr:
        path = Path(folder) / MODEL_FILE
        if not path.is_file():
            raise ArtifactError(path, "pCTR model not found (train it first)")
        return cls(
            lgb.Booster(model_file=str(path)), Calibrator.load(Path(folder) / CALIBRATION_FILE)
        )


def _x(frame: pl.DataFrame) -> np.ndarray:
    return frame.select([pl.col(c).cast(pl.Float64) for c in FEATURES]).to_numpy()


def train_pctr(frame: pl.DataFrame, cfg: AdsConfig) -> Pctr:
    """Fit on most users' impressions (early stopping on a slice of them), calibrate on the
    rest: the calibration sees rows the trees never did."""
    users = frame["user_id"].unique().sort()
    rng = np.random.default_rng(cfg.seed)
    held = set(
        rng.choice(
            users.to_numpy(), int(len(users) * cfg.calibration_share), replace=False
        ).tolist()
    )
    is_held = frame["user_id"].is_in(list(held))
    fit, calib = frame.filter(~is_held), frame.filter(is_held)
    stop = rng.random(fit.height) < 0.2
    y = fit["clicked"].to_numpy().astype(float)
    x = _x(fit)
    params = {
        "objective": "binary",
        "metric": "binary_logloss",
        "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "seed": cfg.seed,
        "deterministic": True,
        "force_col_wise": True,
        "verbosity": -1,
    }
    dtrain = lgb.Dataset(
        x[~stop], y[~stop], feature_name=FEATURES, categorical_feature=["top_category"]
    )
    dstop = lgb.Dataset(x[stop], y[stop], reference=dtrain)
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=cfg.num_boost_round,
        valid_sets=[dstop],
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )
    raw = dense(booster.predict(_x(calib), num_iteration=booster.best_iteration))
    return Pctr(booster, Calibrator.fit(raw, calib["clicked"].to_numpy().astype(float)))


def pctr_report(model: Pctr, frame: pl.DataFrame) -> dict[str, float]:
    """AUC, log loss and ECE of the raw and the calibrated probabilities on `frame`."""
    y = frame["clicked"].to_numpy().astype(float)
    raw, cal = model.raw(frame), model(frame)
    eps = 1e-6
    return {
        "rows": float(len(y)),
        "click_rate": float(y.mean()),
        "auc": float(roc_auc_score(y, raw)),
        "logloss_raw": float(log_loss(y, np.clip(raw, eps, 1 - eps))),
        "logloss_calibrated": float(log_loss(y, np.clip(cal, eps, 1 - eps))),
        "ece_raw": expected_calibration_error(raw, y),
        "ece_calibrated": expected_calibration_error(cal, y),
    }
