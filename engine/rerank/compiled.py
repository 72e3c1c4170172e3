"""The re-ranker compiled to native code with lleaves (LLVM): the same trees as LightGBM's
`Booster.predict`, several times faster on the batch lists, where scoring was most of the
time (BENCHMARKS.md, "Batch recommend-all").

Compiling costs seconds to a minute (it grows with the trees), so it pays on large batches
only, and the result is cached per model and machine: `cache_dir()/<sha256>.o`, the key
hashing the model text, lleaves' version and the CPU it was compiled for. The object is
written under a temporary name and renamed, so a killed compile leaves no half file. Any
failure (lleaves missing, an unsupported model) falls back to LightGBM with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path

import lightgbm as lgb
import numpy as np

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """$RECENGINE_CACHE, else $XDG_CACHE_HOME/recengine, else ~/.cache/recengine; /ranker."""
    base = os.environ.get("RECENGINE_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recengine"
    return Path(base) / "ranker"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


class CompiledRanker:
    """`predict(x)` of a LightGBM booster (at its best iteration) through native code.

    Used where `score_frame` takes a booster: `predict`, `best_iteration`, `feature_name`.
    """

    best_iteration = 0  # the compiled model holds exactly the trees LightGBM would use

    def __init__(self, booster: lgb.Booster, *, threads: int | None = None) -> None:
        import lleaves  # optional at import time: the caller falls back without it

        text = booster.model_to_string(num_iteration=booster.best_iteration or None)
        key = hashlib.sha256("\n".join(
            [text, metadata.version("lleaves"), platform.machine(), _cpu()]).encode()).hexdigest()
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        obj = folder / f"{key}.o"
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            model_file = Path(tmp) / "model.txt"
            model_file.write_text(text)
            self._model = lleaves.Model(model_file=str(model_file))
            if obj.is_file():
                self._model.compile(cache=str(obj))
            else:
                staged = Path(tmp) / "model.o"
                self._model.compile(cache=str(staged))
                os.replace(staged, obj)
        self._names = booster.feature_name()
        self._threads = threads or os.cpu_count() or 1
        self.cache = obj

    def feature_name(self) -> list[str]:
        return list(self._names)

    def predict(self, x: np.ndarray, num_iteration: int | None = None) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float64)
        # one request's few hundred rows: threads would cost more than they save
        jobs = 1 if len(x) < 20_000 else self._threads
        return self._model.predict(x, n_jobs=jobs)


def compiled_or_booster(booster: lgb.Booster) -> CompiledRanker | lgb.Booster:
    """The compiled ranker, or `booster` itself when compiling fails (logged)."""
    try:
        return CompiledRanker(booster)
    except Exception as exc:  # noqa: BLE001 - any failure keeps LightGBM's own predict
        log.warning("re-ranker not compiled (%s: %s); scoring with LightGBM",
                    type(exc).__name__, exc)
        return booster
