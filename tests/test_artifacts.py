"""The artifact store's own promises: one run at a time holds a root (the lock dies with its
process, and the CLI names the holder), versions and staging folders leave through `trash/` so
that a kill halfway through a deletion never leaves a half-deleted folder where a whole one is
expected, and a root that is a file or cannot be created is an error without a traceback."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.jobs import artifacts
from engine.jobs.artifacts import (
    STAGING,
    TRASH,
    VERSIONS,
    clear_staging,
    prune,
    run_lock,
    switch_current,
    write_manifest,
)
from pipelines.errors import RunLockedError
from tests.conftest import small_job

runner = CliRunner()


def version(root: Path, name: str) -> Path:
    folder = root / VERSIONS / name
    folder.mkdir(parents=True)
    (folder / "lists.parquet").write_bytes(b"PAR1" * 16)
    write_manifest(folder, {"version": name})
    return folder


def test_a_second_run_on_the_same_root_is_refused(tmp_path: Path) -> None:
    with (
        run_lock(tmp_path),
        pytest.raises(RunLockedError, match=f"pid {os.getpid()}"),
        run_lock(tmp_path),
    ):
        pass
    with run_lock(tmp_path):  # free again once released
        pass


def test_the_lock_dies_with_a_killed_process(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom engine.jobs.artifacts import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"  # type: ignore[union-attr]
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"), run_lock(tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path):  # SIGKILL released it
        pass


def test_prune_and_clear_staging_go_through_the_trash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deleted: list[Path] = []
    real = shutil.rmtree
    monkeypatch.setattr(
        artifacts.shutil, "rmtree", lambda p, *a, **k: (deleted.append(Path(p)), real(p, *a, **k))
    )
    old, mid, new = (version(tmp_path, n) for n in ("v1", "v2", "v3"))
    switch_current(tmp_path, new)
    (tmp_path / STAGING / "abc" / "stages").mkdir(parents=True)
    # a deletion killed halfway: a half-deleted folder was left in the trash
    shutil.copytree(old, tmp_path / TRASH / "versions-v0")
    (tmp_path / TRASH / "versions-v0" / "lists.parquet").unlink()
    assert prune(tmp_path, 2) == [old]
    assert sorted(p.name for p in (tmp_path / VERSIONS).iterdir()) == ["v2", "v3"]
    assert not (tmp_path / TRASH).exists() or not list((tmp_path / TRASH).iterdir())
    assert clear_staging(tmp_path) == [tmp_path / STAGING / "abc"]
    assert not list((tmp_path / STAGING).iterdir()) and mid.is_dir()
    assert deleted and all(p.is_relative_to(tmp_path / TRASH) for p in deleted)  # only there


def test_the_cli_refuses_a_locked_root_a_file_root_and_a_denied_write(
    small_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = small_job(small_data, tmp_path / "data")
    root = tmp_path / "artifacts"
    with run_lock(root):
        held = runner.invoke(app, ["nightly", "--config", str(config), "--artifacts", str(root)])
    assert held.exit_code == 8 and "another recengine run" in held.output
    assert f"pid {os.getpid()}" in held.output and "Traceback" not in held.output
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    result = runner.invoke(app, ["nightly", "--config", str(config), "--artifacts", str(a_file)])
    assert result.exit_code == 5 and "is a file, not a folder" in result.output
    denied = tmp_path / "denied"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    result = runner.invoke(app, ["nightly", "--config", str(config), "--artifacts", str(denied)])
    assert result.exit_code == 6 and "Permission denied" in result.output
    assert str(denied) in result.output and "Traceback" not in result.output
    assert not (root / "current").exists()
