"""The artifact store: `versions/<version>/` folders with a manifest of file checksums, a
`current` symlink switched atomically, staging folders for runs under way, and retention.

A version folder appears under `versions/` only by one rename of a complete staging folder,
after its manifest is written; `current` moves only by renaming a new symlink over the old
one; an old version leaves by one rename into `trash/` before it is deleted. So a reader
following `current` never sees a partial version, whatever was killed when.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pipelines.errors import ArtifactError, RunLockedError
from pipelines.io import atomic_path, sha256_file

VERSIONS = "versions"
CURRENT = "current"
STAGING = "staging"
TRASH = "trash"
LOCK = ".lock"
MANIFEST = "manifest.json"


def version_files(folder: Path) -> list[str]:
    """The relative paths a manifest lists: every file under `folder` bar the manifest and
    hidden (temporary) files, sorted."""
    folder = Path(folder)
    return [
        p.relative_to(folder).as_posix()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    ]


def file_checksums(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file a manifest lists."""
    return {rel: sha256_file(Path(folder) / rel) for rel in version_files(folder)}


def write_manifest(folder: Path, info: dict[str, object]) -> dict[str, object]:
    """`info` plus the checksum of every file in `folder`, written as manifest.json."""
    manifest = {**info, "files": file_checksums(folder)}
    with atomic_path(Path(folder) / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return manifest


def read_manifest(folder: Path) -> dict[str, object]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ArtifactError(path, "manifest not found: not a published recengine version")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(path, f"manifest is not valid JSON: {exc}") from None


def _inside(folder: Path, rel: str) -> Path:
    """`folder / rel`, refused when `rel` would lead out of `folder` (an absolute path, `..`)."""
    path = (folder / rel).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ArtifactError(folder / MANIFEST, f"lists {rel!r}, a path outside the version")
    return path


def verify(folder: Path) -> dict[str, object]:
    """The manifest of `folder`, after checking that every listed file exists with its
    checksum, that no listed path leads outside `folder` and that no file is unlisted (a
    reader must never load bytes the manifest does not vouch for)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(folder / MANIFEST, "manifest lists no files")
    paths = {}
    for rel in files:
        paths[rel] = _inside(folder, rel)
        if not paths[rel].is_file():
            raise ArtifactError(folder / rel, "listed in the manifest but missing")
    # hashlib and file reads release the GIL: the files are hashed on every core at once,
    # largest first, which halves a 1.5 GB version's check on 2 cores
    order = sorted(paths, key=lambda rel: -paths[rel].stat().st_size)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        sums = dict(zip(order, pool.map(lambda rel: sha256_file(paths[rel]), order), strict=True))
    for rel, want in files.items():
        if sums[rel] != want:
            raise ArtifactError(
                folder / rel, "checksum does not match the manifest (changed or corrupt)"
            )
    extra = [rel for rel in version_files(folder) if rel not in files]
    if extra:
        raise ArtifactError(
            folder / extra[0],
            f"not listed in the manifest ({len(extra)} such file(s); added after publishing?)",
        )
    return manifest


def current_version(root: Path) -> Path | None:
    """The version folder `current` points at, or None before the first publish; a link
    that leads outside `versions/` is refused."""
    link = Path(root) / CURRENT
    if not link.is_symlink() and not link.exists():
        return None
    target = link.resolve()
    if not target.is_relative_to((Path(root) / VERSIONS).resolve()):
        raise ArtifactError(link, f"points at {target}, outside {Path(root) / VERSIONS}")
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
        raise ArtifactError(final, "version already exists")
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


def remove(root: Path, folder: Path) -> None:
    """Delete `folder` after one rename into `trash/`: a kill halfway through the deletion
    leaves the folder in the trash (emptied by the next removal), never a half-deleted
    version or staging folder in its place."""
    trash = Path(root) / TRASH
    if trash.exists():
        shutil.rmtree(trash)  # what a killed removal left
    trash.mkdir()
    os.replace(folder, trash / folder.name)
    shutil.rmtree(trash)


def prune(root: Path, keep: int) -> list[Path]:
    """Remove all but the `keep` newest versions (never the current one); the removed."""
    root = Path(root)
    folder = root / VERSIONS
    if not folder.is_dir():
        return []
    live = current_version(root)
    versions = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name)
    gone = [p for p in versions[:-keep] if live is None or p.resolve() != live]  # keep >= 1
    for p in gone:
        remove(root, p)
    return gone


def clear_staging(root: Path) -> list[Path]:
    """Remove every staging folder (after a publish, what is left there belongs to runs whose
    inputs, config or code are gone); the removed."""
    folder = Path(root) / STAGING
    gone = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    for p in gone:
        remove(root, p)
    return gone


@contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold `root/.lock` for one run: a second run on the same artifacts root fails at once
    instead of writing into the same staging folder. The kernel drops the lock when the
    process dies, however it dies, so a killed run never leaves it behind."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ArtifactError(root, "the artifacts root is a file, not a folder")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise RunLockedError(
                f"{root}: another recengine run is using this artifacts root "
                f"({fh.read().strip() or 'pid unknown'}); wait for it to "
                "finish"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
        fh.flush()
        try:
            yield
        finally:
            fh.truncate(0)  # no stale pid for the next reader
            fcntl.flock(fh, fcntl.LOCK_UN)
