"""The nightly job SIGKILLed at random moments: after every kill `current` points at a
complete version whose checksums verify, no earlier version is lost or left partial, and a
rerun completes. A round changes the config (a new version to build), kills the job at a
random moment until a run gets through, and checks the store after each kill; a rerun
resumes from the first stage that was not recorded, so the kills of one round walk through
the stages. These run in the slow suite (CI runs it too); the kills inside each stage at a
chosen point are in tests/test_nightly.py, in the fast suite."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from engine.jobs.artifacts import VERSIONS, current_version, verify
from engine.jobs.stages import STAGES
from tests.conftest import nightly_cmd, small_job, tally


def store(root: Path) -> tuple[Path | None, dict[str, str]]:
    """`current`'s target and every version's run key, each version verified (a partial
    one fails here)."""
    return current_version(root), {
        p.name: str(verify(p)["run_key"]) for p in sorted((root / VERSIONS).iterdir())
    }


ORDER = [name for name, _ in STAGES] + ["publish"]


def stage_running(root: Path, since: float) -> str:
    """The stage a run launched at `since` (epoch seconds) is in: the first one its staging
    folder has not recorded as done, if it started it; else "start-up"."""
    runs = list(root.glob("staging/*/stages"))
    if not runs:
        return "start-up"
    name = next(n for n in ORDER if not (runs[0] / f"{n}.json").is_file() or n == "publish")
    started = runs[0] / f"{name}.started"
    return name if started.is_file() and started.stat().st_mtime >= since else "start-up"


def run_killed_in(config: Path, root: Path, stage: str | None, after_s: float) -> str | None:
    """Run the job, wait until it starts `stage` (None: at once), SIGKILL it `after_s`
    seconds later; the stage it was in, or None when it finished first."""
    since = time.time()
    proc = subprocess.Popen(
        nightly_cmd(config, root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        while (
            stage is not None
            and proc.poll() is None
            and stage_running(root, since) not in (ORDER[ORDER.index(stage) :])
        ):
            time.sleep(0.02)
        proc.wait(timeout=after_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return stage_running(root, since)
    finally:
        err = proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == 0, err[-3000:]
    return None


def kill_rounds(
    small_data: Path, folder: Path, *, kills: int, kills_per_round: int, seed: int, max_rounds: int
) -> Counter[str]:
    """New versions built until `kills` kills have landed, each killed up to
    `kills_per_round` times before a run is let through: at a random moment of a random
    stage not yet done (a stage is drawn, then a moment within its length in an
    uninterrupted run); the stage each kill hit, counted."""
    rng = random.Random(seed)
    base = small_job(small_data, folder / "data")
    text = base.read_text().replace("\nretention = 2\n", "\nretention = 100\n")
    root = folder / "artifacts"
    subprocess.run(nightly_cmd(base, root), check=True, capture_output=True, timeout=600)
    seconds = verify(current_version(root))["seconds"]  # type: ignore[arg-type]
    hit: Counter[str] = Counter()
    r = 0
    while sum(hit.values()) < kills and r < max_rounds:
        r += 1
        config = folder / "data" / f"round{r}.toml"
        config.write_text(text.replace("\nk = 5\n", f"\nk = {6 + r}\n"))  # a new version
        live, before = store(root)
        for _ in range(min(kills_per_round, kills - sum(hit.values()))):
            done = {p.stem for p in root.glob("staging/*/stages/*.json")}
            stage = rng.choice([n for n in ORDER if n not in done])
            versions_before = set(store(root)[1])
            killed_in = run_killed_in(
                config, root, stage, rng.uniform(0, max(seconds.get(stage, 0.0), 0.2))
            )
            if killed_in is None:
                break  # it finished before the kill
            now_live, now = store(root)
            if killed_in == "start-up" and set(now) - versions_before:
                killed_in = "publish"  # its staging folder had moved into versions/
            hit[killed_in] += 1
            assert before.items() <= now.items()  # nothing earlier lost or changed
            assert now_live in (live, *(root / VERSIONS / v for v in set(now) - set(before)))
        assert run_killed_in(config, root, None, 600) is None  # the rerun completes
        live, now = store(root)
        assert before.items() <= now.items() and len(now) == len(before) + 1
        assert live == root / VERSIONS / (set(now) - set(before)).pop()
    tally("nightly: SIGKILLs survived", sum(hit.values()))
    for stage, n in hit.items():
        tally(f"nightly: SIGKILLs in {stage}", n)
    return hit


@pytest.mark.slow
def test_twenty_four_random_kills_across_the_stages(small_data: Path, tmp_path: Path) -> None:
    hit = kill_rounds(small_data, tmp_path, kills=24, kills_per_round=4, seed=2026, max_rounds=24)
    assert sum(hit.values()) == 24  # the rounds had room for every kill
    assert len(set(hit) - {"start-up"}) >= 5, hit  # the kills reached most stages
