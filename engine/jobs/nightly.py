"""`recengine nightly`: run every stage into a staging folder keyed by the run's inputs, resume
from the first unfinished stage after a crash, hold the new version to the quality gate, and
publish it atomically.

The run key is a hash of the input files, the config, the library versions and recengine's
source: a rerun after a kill finds the same staging folder and its stage records; a rerun with
nothing changed finds the key in the live version's manifest and publishes nothing.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from engine.config import EngineConfig
from engine.jobs.artifacts import (
    VERSIONS,
    clear_staging,
    current_version,
    prune,
    publish,
    read_manifest,
    run_lock,
    staging_dir,
    switch_current,
    verify,
    write_manifest,
)
from engine.jobs.incremental import STAGES as INCREMENTAL_STAGES
from engine.jobs.incremental import base_figures
from engine.jobs.ranks import Ranks
from engine.jobs.stages import PER_USER, STAGES, Figures, Run
from pipelines.errors import QualityGateError
from pipelines.event_log import consume, freeze, log_path
from pipelines.io import atomic_path, require_file, sha256_file
from pipelines.progress import Report, silent
from pipelines.scalars import int_or

GATED = {"train": "valid_recall", "rerank": "holdout_ndcg"}
"""The validation figures a new version must not lose against the live one."""
LIBRARIES = (
    "recengine",
    "torch",
    "torchrec",
    "faiss-cpu",
    "lightgbm",
    "polars",
    "numpy",
    "scikit-learn",
)


@dataclass(frozen=True)
class NightlyResult:
    """What a run did: the version now live, whether this run published it, and why."""

    version: Path | None
    published: bool
    reason: str  # "published", "unchanged", "resumed publish"
    figures: dict[str, Figures]
    seconds: dict[str, float]


INPUTS = ("interactions", "items", "users")


def input_checksums(cfg: EngineConfig) -> dict[str, str]:
    out = {name: sha256_file(getattr(cfg.data, name)) for name in INPUTS}
    if cfg.data.events is not None and cfg.data.events.is_file():
        out["events"] = sha256_file(cfg.data.events)
    return out


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Python's version and those of `LIBRARIES` and `extra` (the installed ones)."""
    out = {"python": platform.python_version()}
    for name in (*LIBRARIES, *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def code_fingerprint() -> str:
    """sha256 of recengine's own source: a run resumed or skipped after the code changed
    would mix or keep outputs of the old code."""
    h = hashlib.sha256()
    top = Path(__file__).resolve().parents[2]
    for package in ("pipelines", "embeddings", "engine", "serving"):
        for path in sorted((top / package).rglob("*.py")):
            h.update(path.relative_to(top).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def run_identity(cfg: EngineConfig) -> dict[str, object]:
    """What a run is built from: the inputs' checksums, the library versions, recengine's
    source and the config (bar where artifacts go). Hashed into the run key, and the inputs
    and libraries go into the manifest as they are (the inputs are hashed once per run)."""
    return {
        "inputs": input_checksums(cfg),
        "libraries": library_versions(),
        "code": code_fingerprint(),
        "config": cfg.model_dump(mode="json", exclude={"artifacts"}),
    }


def run_key(identity: dict[str, object]) -> str:
    """sha256 of a run's identity."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _published_with(root: Path, key: str) -> Path | None:
    """A version folder built from this run key (a publish interrupted before the switch)."""
    folder = root / VERSIONS
    for v in sorted(folder.glob(f"*-{key[:12]}")) if folder.is_dir() else []:
        if read_manifest(v).get("run_key") == key:
            return v
    return None


def mark_started(staging: Path, name: str) -> None:
    """`stages/<name>.started` holds when the stage last started: with the `<name>.json`
    records of finished stages, it tells which stage a run under way (or killed) is in."""
    with atomic_path(staging / "stages" / f"{name}.started") as tmp:
        tmp.write_text(datetime.now(UTC).isoformat())


def check_gate(figures: dict[str, Figures], live: Path | None, tolerance: float) -> list[str]:
    """The gated figures that fell by more than `tolerance` against the live version."""
    if live is None:
        return []
    gate = read_manifest(live).get("gate")
    old = gate if isinstance(gate, dict) else {}
    worse = []
    for stage, name in GATED.items():
        new_v, old_v = figures.get(stage, {}).get(name), old.get(f"{stage}.{name}")
        if (
            isinstance(new_v, (int, float))
            and isinstance(old_v, (int, float))
            and new_v < old_v * (1.0 - tolerance)
        ):
            worse.append(f"{stage}.{name} {new_v:.4f} < live {old_v:.4f}")
    return worse


def incremental_base(live: Path | None, cfg: EngineConfig) -> Path | None:
    """The live version an incremental run may build on: None before the first version, or
    when its models are older than `full_retrain_days` (time for a full retrain)."""
    if live is None:
        return None
    trained = read_manifest(live).get("trained_at")
    if not isinstance(trained, str):
        return None
    age = datetime.now(UTC) - datetime.fromisoformat(trained)
    return live if age.total_seconds() < cfg.jobs.full_retrain_days * 86400 else None


def run_nightly(
    cfg: EngineConfig,
    root: Path | None = None,
    *,
    force: bool = False,
    incremental: bool = False,
    report: Report = silent,
    ranks: Ranks | None = None,
) -> NightlyResult:
    """Build, gate and publish a version under `root` (default: the config's artifacts root).

    `incremental` reuses the live version's models and adds the items and users that came
    since (content vectors, a new index and new lists); it runs in full when there is no live
    version or its models are older than `[jobs] full_retrain_days`. With `ranks` of more than
    one process (torchrun), every rank calls this: rank 0 takes the lock, freezes the events,
    runs the whole-catalogue stages and publishes; the per-user work is split between all."""
    ranks = ranks or Ranks()
    root = Path(root or cfg.artifacts.root).resolve()
    for name in INPUTS:  # a missing input is named before anything is written
        require_file(getattr(cfg.data, name))
    log = cfg.data.events or log_path(root)
    with run_lock(root) if ranks.is_main else nullcontext():  # the lock makes the root
        ranks.check_root(root)
        frozen = freeze(log) if ranks.is_main else None  # the events so far: a fixed input
        if frozen is not None:
            data = cfg.data.model_copy(update={"events": frozen.path})
            cfg = cfg.model_copy(update={"data": data})
        if ranks.size > 1:  # every rank works from rank 0's config (the frozen events)
            cfg = EngineConfig.model_validate(ranks.broadcast(cfg.model_dump(mode="json")))
        result = _run(
            cfg,
            root,
            run_identity(cfg) if ranks.is_main else {},
            force=force,
            incremental=incremental,
            report=report,
            events_through=frozen.through if frozen is not None else 0,
            ranks=ranks,
        )
        if ranks.is_main and result.version is not None:  # published: the log lets go of them
            consume(log, int_or(read_manifest(result.version).get("events_through"), 0))
        return result


def _run(
    cfg: EngineConfig,
    root: Path,
    identity: dict[str, object],
    *,
    force: bool,
    incremental: bool,
    report: Report,
    events_through: int = 0,
    ranks: Ranks,
) -> NightlyResult:
    plan = _plan(cfg, root, identity, force=force, incremental=incremental) if ranks.is_main else {}
    plan = ranks.broadcast(plan)
    if "result" in plan:  # nothing to build: unchanged, or a publish a kill interrupted
        version, reason = plan["result"]
        return NightlyResult(Path(version), reason != "unchanged", reason, {}, {})
    staging, key = Path(plan["staging"]), str(plan["key"])
    base = Path(plan["base"]) if plan["base"] else None
    live = Path(plan["live"]) if plan["live"] else None
    run = Run(
        cfg,
        staging,
        report=report if ranks.is_main else silent,
        base=base,
        base_figures=base_figures(base) if base is not None else {},
        ranks=ranks,
    )
    seconds = run.seconds
    for name, stage in INCREMENTAL_STAGES if base is not None else STAGES:
        record = staging / "stages" / f"{name}.json"
        saved = ranks.broadcast(
            json.loads(record.read_text()) if ranks.is_main and record.is_file() else None
        )  # rank 0 alone reads the records: every rank resumes at the same stage
        if saved is not None:
            run.figures[name], seconds[name] = saved["figures"], saved["seconds"]
            continue
        run.report(name)
        if ranks.is_main:
            mark_started(staging, name)
        t0 = time.perf_counter()
        with ranks.cores(name in PER_USER):
            figures = stage(run) if ranks.is_main or name in PER_USER else {}
        ranks.barrier()  # recorded only once every rank has finished the stage
        seconds[name] = round(time.perf_counter() - t0, 3)
        figures = ranks.broadcast(figures)
        run.figures[name] = figures
        if ranks.is_main:
            with atomic_path(record) as tmp:
                tmp.write_text(
                    json.dumps({"figures": figures, "seconds": seconds[name]}, default=str)
                )
    if not ranks.is_main:  # rank 0 publishes; the others wait to hear that it did
        version = ranks.broadcast(None)
        return NightlyResult(Path(version), True, "published", run.figures, seconds)
    report("publish")
    mark_started(staging, "publish")
    worse = check_gate(run.figures, live, cfg.jobs.gate_tolerance)
    if worse and not force:
        raise QualityGateError(
            f"quality gate: not published, {'; '.join(worse)} (tolerance "
            f"{cfg.jobs.gate_tolerance:.0%}); `current` still points at {live.name if live else '-'}"
            "; rerun with --force to publish anyway"
        )
    version = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{key[:12]}"
    trained_at = (
        read_manifest(base)["trained_at"] if base is not None else datetime.now(UTC).isoformat()
    )
    write_manifest(
        staging,
        {
            "version": version,
            "run_key": key,
            "data_key": plan["data_key"],
            "created": datetime.now(UTC).isoformat(),
            "inputs": identity["inputs"],
            "config": cfg.model_dump(mode="json"),
            "libraries": identity["libraries"],
            "metrics": run.figures,
            "seconds": run.seconds,
            "gate": {f"{s}.{n}": run.figures.get(s, {}).get(n) for s, n in GATED.items()},
            "forced": bool(worse),
            "trained_at": trained_at,
            "incremental_from": base.name if base is not None else None,
            "events_through": events_through,
            "ranks": ranks.size,
        },
    )
    final = publish(root, staging, version)
    prune(root, cfg.jobs.retention)
    clear_staging(root)
    ranks.broadcast(str(final))
    return NightlyResult(final, True, "published", run.figures, seconds)


def _plan(
    cfg: EngineConfig, root: Path, identity: dict[str, object], *, force: bool, incremental: bool
) -> dict[str, object]:
    """What rank 0 decides before any stage (JSON, for the other ranks): a result when there
    is nothing to build, else the staging folder, the run key and the versions it builds on."""
    live = current_version(root)
    base = incremental_base(live, cfg) if incremental else None
    data_key = run_key(identity)
    if live is not None and read_manifest(live).get("data_key") == data_key and not force:
        return {"result": [str(live), "unchanged"]}
    key = (
        data_key
        if base is None
        else hashlib.sha256(f"{data_key} incremental on {base.name}".encode()).hexdigest()
    )
    done = _published_with(root, key)
    if done is not None:
        verify(done)
        switch_current(root, done)
        return {"result": [str(done), "resumed publish"]}
    staging = staging_dir(root, key)
    (staging / "stages").mkdir(parents=True, exist_ok=True)
    return {
        "staging": str(staging),
        "key": key,
        "data_key": data_key,
        "base": str(base) if base is not None else None,
        "live": str(live) if live is not None else None,
    }
