"""Probability calibration saved as data: isotonic regression (scikit-learn) fitted on a
held-out slice, stored as its breakpoints in JSON and applied by interpolation, so nothing is
unpickled at load time. Also the expected calibration error (ECE) that says whether it helped."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.isotonic import IsotonicRegression

from pipelines.errors import ArtifactError
from pipelines.io import atomic_path

FLOOR = 1e-3
"""Calibrated probabilities stay in [FLOOR, 1 - FLOOR]: a bin with no click in a small
calibration slice says "rare", not "never", and log loss must not punish it as certainty."""


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from raw to calibrated probability, as (x, y) breakpoints."""

    x: np.ndarray
    y: np.ndarray

    @classmethod
    def fit(cls, raw: np.ndarray, label: np.ndarray) -> Calibrator:
        iso = IsotonicRegression(y_min=FLOOR, y_max=1.0 - FLOOR, out_of_bounds="clip").fit(
            raw, label
        )
        return cls(np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float))

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.x, self.y)

    def save(self, path: Path) -> Path:
        with atomic_path(Path(path)) as tmp:
            tmp.write_text(
                json.dumps({"kind": "isotonic", "x": self.x.tolist(), "y": self.y.tolist()})
            )
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> Calibrator:
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(path, "calibration file not found")
        data = json.loads(path.read_text())
        if data.get("kind") != "isotonic" or len(data["x"]) != len(data["y"]):
            raise ArtifactError(path, "not an isotonic calibration (kind, x, y of equal length)")
        return cls(np.asarray(data["x"], float), np.asarray(data["y"], float))


def expected_calibration_error(prob: np.ndarray, label: np.ndarray, bins: int = 15) -> float:
    """Sum over equal-count probability bins of (bin share) x |mean prob - click rate|."""
    order = np.argsort(prob, kind="stable")
    err = 0.0
    for part in np.array_split(order, bins):
        if len(part):
            err += len(part) / len(prob) * abs(prob[part].mean() - label[part].mean())
    return float(err)
