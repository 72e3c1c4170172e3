"""The artifact store: `versions/<version>/` folders with a manifest of file checksums, a
`current` symlink switched atomically, staging folders for runs under way, and retention.

A version folder appears under `versions/` only by one rename of a complete staging folder,
after its manifest is written; `current` moves only by renaming a new symlink over the old
one. So a reader following `current` never sees a partial version, whatever was killed when.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pipelines.errors import DataError
from pipelines.io import atomic_path, sha256_file

VERSIONS = "versions"
CURRENT = "current"
STAGING = "staging"
MANIFEST = "manifest.json"


def file_checksums(folder: Path, *, skip: tuple[str, ...] = (MANIFEST,)) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder` (sorted, `skip` left out)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip
            and not p.name.startswith(".")}


def write_manifest(folder: Path, info: dict[str, object]) -> dict[str, object]:
    """`info` plus the checksum of every file in `folder`, written as manifest.json."""
    manifest = {**info, "files": file_checksums(folder)}
    with atomic_path(Path(folder) / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return manifest


def read_manifest(folder: Path) -> dict[str, object]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DataError(path, "manifest not found: not a published recengine version")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(path, f"manifest is not valid JSON: {exc}") from None


def verify(folder: Path) -> dict[str, object]:
    """The manifest of `folder`, after checking every listed file exists with its checksum."""
    manifest = read_manifest(folder)
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise DataError(Path(folder) / MANIFEST, "manifest lists no files")
    for rel, want in files.items():
        path = Path(folder) / rel
        if not path.is_file():
            raise DataError(path, "listed in the manifest but missing")
        if sha256_file(path) != want:
            raise DataError(path, "checksum does not match the manifest (changed or corrupt)")
    return manifest


def current_version(root: Path) -> Path | None:
    """The version folder `current` points at, or None before the first publish."""
    link = Path(root) / CURRENT
    if not link.is_symlink() and not link.exists():
        return None
    target = link.resolve()
    return target if target.is_dir() else None


def staging_dir(root: Path, run_key: str) -> Path:
    """The folder a run with this key builds into (the same key resumes the same folder)."""
    return Path(root) / STAGING / run_key


def publish(root: Path, staging: Path, version: str) -> Path:
    """Move a complete staging folder (manifest written) to `versions/<version>` and point
    `current` at it; returns the version folder."""
    root = Path(root)
    read_manifest(staging)
    final = root / VERSIONS / version
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        raise DataError(final, "version already exists")
    os.replace(staging, final)
    switch_current(root, final)
    return final


def switch_current(root: Path, target: Path) -> None:
    """Point `current` at `target` by renaming a new relative symlink over it (atomic)."""
    root = Path(root)
    tmp = root / f".{CURRENT}.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(target, root), tmp)
    os.replace(tmp, root / CURRENT)


def prune(root: Path, keep: int) -> list[Path]:
    """Remove all but the `keep` newest versions (never the current one); the removed."""
    folder = Path(root) / VERSIONS
    if not folder.is_dir():
        return []
    live = current_version(root)
    versions = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name)
    gone = [p for p in versions[:-keep] if live is None or p.resolve() != live]  # keep >= 1
    for p in gone:
        shutil.rmtree(p)
    return gone


def clear_staging(root: Path) -> list[Path]:
    """Remove every staging folder (after a publish, what is left there belongs to runs whose
    inputs, config or code are gone); the removed."""
    folder = Path(root) / STAGING
    gone = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    for p in gone:
        shutil.rmtree(p)
    return gone
