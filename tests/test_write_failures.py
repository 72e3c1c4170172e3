"""A full disk or a folder the job may not write to, at any point of a nightly run: the job
stops with a clear error naming the file, `current` and every published version stay as they
were, and a rerun once the fault is gone completes and publishes.

The full disk is real: the job runs as a child process whose file-size limit (RLIMIT_FSIZE)
makes the operating system refuse the first write past it, whichever library writes. The
permission errors are injected at the three kinds of writes a run makes (a stage's file, the
move of the finished version into `versions/`, the switch of `current`), since the tests may
run as root, whom file modes do not stop."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.jobs.artifacts import CURRENT, VERSIONS, current_version, verify
from engine.jobs.nightly import run_nightly
from pipelines.config import load_config
from pipelines.errors import WriteError
from tests.conftest import copy_root, tally


@pytest.fixture(scope="module")
def changed(published: tuple[EngineConfig, Path], published_config: Path) -> tuple[Path, Path]:
    """(config of a changed run, the session's root with one live version built before it:
    each test copies it)."""
    config = published_config.with_name("changed.toml")
    config.write_text(published_config.read_text().replace("\nk = 5\n", "\nk = 4\n"))
    return config, published[1]


def snapshot(root: Path) -> tuple[Path | None, dict[str, dict]]:
    """`current`'s target and every published version's verified manifest."""
    return current_version(root), {p.name: verify(p) for p in (root / VERSIONS).iterdir()}


# sets the file-size limit in the child itself, then runs the CLI: writes past it fail with
# EFBIG (SIGXFSZ ignored) whichever library makes them
LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE,
                   (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
from engine.cli import app
app(sys.argv[2:], prog_name="recengine")
"""


def nightly(
    config: Path, root: Path, *, file_size_limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    args = ["nightly", "--config", str(config), "--artifacts", str(root)]
    cmd = (
        [sys.executable, "-c", LIMITED, str(file_size_limit), *args]
        if file_size_limit is not None
        else [sys.executable, "-m", "engine.cli", *args]
    )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def recorded(root: Path) -> set[str]:
    """The stages the (one) unfinished run recorded as done."""
    return {p.stem for p in root.glob("staging/*/stages/*.json")}


# (bytes a file may reach, the stage whose output first passes it); the small set's feature
# tables are ~13 KB, its model weights ~110 KB and its report page ~240 KB
LIMITS = [
    pytest.param(12_000, "features", id="features"),
    pytest.param(60_000, "train", id="train", marks=pytest.mark.slow),
    pytest.param(150_000, "evaluation", id="evaluation", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("limit", "stage"), LIMITS)
def test_a_full_disk_leaves_current_untouched(
    changed: tuple[Path, Path], tmp_path: Path, limit: int, stage: str
) -> None:
    config, live_root = changed
    root = copy_root(live_root, tmp_path / "artifacts")
    before = snapshot(root)
    failed = nightly(config, root, file_size_limit=limit)
    assert failed.returncode == 6, failed.stderr[-2000:]  # WriteError
    assert f"{root}/staging/" in failed.stderr and "cannot write" in failed.stderr
    assert "File too large" in failed.stderr or "disk full" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert stage not in recorded(root) and recorded(root)  # it stopped in `stage`
    assert snapshot(root) == before
    tally("write failures: full disk, current untouched")
    done = nightly(config, root)
    assert done.returncode == 0, done.stderr[-2000:]
    live, versions = snapshot(root)
    assert live != before[0] and live.name in versions
    assert set(before[1]) < set(versions)  # the earlier version is kept, and verifies


def refuse(monkeypatch: pytest.MonkeyPatch, where: Callable[[Path], bool]) -> None:
    """Make `os.replace` fail with EACCES for destinations `where` accepts."""
    real = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if where(Path(dst)):
            raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_permission_errors_leave_current_untouched(
    changed: tuple[Path, Path], tmp_path: Path
) -> None:
    config, live_root = changed
    root = copy_root(live_root, tmp_path / "artifacts")
    cfg = load_config(config, EngineConfig)
    before = snapshot(root)
    with pytest.MonkeyPatch.context() as mp:  # a stage's output: the model weights
        refuse(mp, lambda dst: dst.name == "model.pt")
        with pytest.raises(WriteError, match=r"embeddings/model.pt: cannot write \(.*Permission"):
            run_nightly(cfg, root)
    assert snapshot(root) == before and "features" in recorded(root)
    with pytest.MonkeyPatch.context() as mp:  # the move of the finished version
        refuse(mp, lambda dst: dst.parent.name == VERSIONS)
        with pytest.raises(PermissionError):
            run_nightly(cfg, root)
    assert snapshot(root) == before and "evaluation" in recorded(root)
    with pytest.MonkeyPatch.context() as mp:  # the switch of `current`
        refuse(mp, lambda dst: dst.name == CURRENT)
        with pytest.raises(PermissionError):
            run_nightly(cfg, root)
    live, versions = snapshot(root)
    assert live == before[0] and len(versions) == len(before[1]) + 1  # in place, not live
    resumed = run_nightly(cfg, root)
    assert resumed.reason == "resumed publish"
    live, versions = snapshot(root)
    assert live == resumed.version and live.name in versions and set(before[1]) < set(versions)
    tally("write failures: permission denied, current untouched", 3)
