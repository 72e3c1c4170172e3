"""Compare two evaluation reports number by number (`recengine evaluate --compare A B`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipelines.errors import ArtifactError

DEFAULT_MATCH = r"^(methods\.[^.]+\.(metrics|beyond)|candidates|verdict|ads)\."
"""The figures printed unless asked otherwise: every method's metrics and beyond-accuracy
figures, candidate recall, the verdict and the ads figures."""


def metrics_file(path: Path) -> Path:
    """metrics.json given itself, a report folder, a version folder or an artifacts root."""
    path = Path(path)
    for p in (
        path,
        path / "metrics.json",
        path / "report" / "metrics.json",
        path / "current" / "report" / "metrics.json",
    ):
        if p.is_file():
            return p
    raise ArtifactError(path, "no evaluation metrics.json here (nor in report/ or current/report/)")


def flatten(doc: object, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a JSON document by its dotted path."""
    out: dict[str, float] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out |= flatten(v, f"{prefix}{k}.")
    elif isinstance(doc, (int, float)) and not isinstance(doc, bool):
        out[prefix[:-1]] = float(doc)
    return out


def compare(
    a: Path, b: Path, *, match: str = DEFAULT_MATCH
) -> list[tuple[str, float | None, float | None, float | None]]:
    """(path, value in A, value in B, B - A) for every numeric figure whose path matches."""
    fa = flatten(json.loads(metrics_file(a).read_text()))
    fb = flatten(json.loads(metrics_file(b).read_text()))
    pattern = re.compile(match)
    rows = []
    for key in [*fa, *(k for k in fb if k not in fa)]:
        if not pattern.search(key):
            continue
        va, vb = fa.get(key), fb.get(key)
        rows.append((key, va, vb, vb - va if va is not None and vb is not None else None))
    return rows
