"""The `recengine` command line. Each command parses arguments and calls one library function;
errors the user can fix are printed without a traceback and exit with one status per kind of
failure (`EXIT_CODES`)."""

from __future__ import annotations

import errno
import functools
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from embeddings.config import EmbeddingsConfig
from engine.config import EngineConfig
from engine.progress import steps, training_bar
from pipelines.config import PipelineConfig, load_config
from pipelines.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    QualityGateError,
    RecengineError,
    RunLockedError,
    WriteError,
)
from pipelines.io import require_file

# TorchRec's planner and DDP explain themselves at length on every run; their warnings are
# about GPU topologies and deprecations, not about the user's data or config.
for name in ("torchrec", "torch.fx"):
    logging.getLogger(name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module=r"torchrec\..*")
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\..*")

app = typer.Typer(
    help="recengine: product and ad recommendations from raw interaction logs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)
REPO = Path(__file__).resolve().parents[1]
SAMPLE_CONFIG = REPO / "data_samples" / "config.toml"
Config = EngineConfig
"""The schema of a whole config file: every layer's sections."""

REFUSALS = {
    errno.EACCES,
    errno.EPERM,
    errno.ENOSPC,
    errno.EFBIG,
    errno.EROFS,
    errno.EDQUOT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
}
"""The system's refusals to write (permissions, a full disk, a file where a folder is
needed): reported like a `WriteError`."""
EXIT_CODES: dict[type[RecengineError], tuple[int, str]] = {
    DataError: (3, "data"),
    ConfigError: (4, "config"),
    ArtifactError: (5, "artifact"),
    WriteError: (6, "write"),
    QualityGateError: (7, "gate"),
    RunLockedError: (8, "locked"),
}
"""Exit status and the word printed before the message (`error (data): ...`), by kind of
failure (README, "Exit codes"). 1 and 2 stay Typer's: 2 a usage error, 1 an abort or a
`RecengineError` of no kind listed here."""
P = ParamSpec("P")
R = TypeVar("R")
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The TOML config file.")]


def exit_code(exc: RecengineError | OSError) -> tuple[int, str]:
    """The exit status and the kind of an error `user_errors` reports (a system refusal is a
    failure to write)."""
    if isinstance(exc, OSError):
        return EXIT_CODES[WriteError]
    kind = next((k for k in type(exc).__mro__ if k in EXIT_CODES), None)
    return EXIT_CODES[kind] if kind is not None else (1, "error")


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn the library's errors and the system's refusals (permissions, a full disk) into a
    red message and the exit status of their kind (no traceback)."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (RecengineError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno not in REFUSALS:
                raise  # not the system refusing: a bug, with its traceback
            code, what = exit_code(exc)
            errors.print(
                f"[bold red]error ({what}):[/] {escape(str(exc))}", highlight=False, soft_wrap=True
            )
            _tell_launcher(code)
            raise typer.Exit(code) from None

    return run


EXIT_FILE = "RECENGINE_EXIT_FILE"
"""Where a rank of `nightly --nproc` leaves its exit status for the launcher: torchrun ends
with 1 whatever failed, and a scheduler tells a bad table (3) from a held lock (8)."""


def _tell_launcher(code: int) -> None:
    """Leave `code` in the launcher's exit file (the first rank to fail keeps its status)."""
    path = os.environ.get(EXIT_FILE)
    if path:
        try:
            with open(path, "x") as fh:
                fh.write(str(code))
        except FileExistsError:
            pass


def _under_torchrun(cmd: list[str]) -> int:
    """Run `cmd` (torchrun) and return the exit status of the first rank that failed with one
    of recengine's errors, else torchrun's own."""
    with tempfile.TemporaryDirectory() as tmp:
        exit_file = Path(tmp) / "status"
        # rank 0 fits the models alone with every core; torchrun would give each rank one
        env = {"OMP_NUM_THREADS": str(os.cpu_count() or 1), **os.environ}
        rc = subprocess.call(cmd, env={**env, EXIT_FILE: str(exit_file)})
        if rc != 0 and exit_file.is_file():
            return int(exit_file.read_text())
        return rc


def _under_itself(nproc: int, command: str, *args: str) -> list[str]:
    """`recengine <command> <args>` as `nproc` ranks of `torchrun` on this machine."""
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*run, f"--nproc-per-node={nproc}", "-m", "engine.cli", command, *args]


def _table(title: str, rows: list[tuple[str, str]]) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    for k, v in rows:
        t.add_row(k, v)
    return t


@app.command()
@user_errors
def generate(
    out: Annotated[Path, typer.Option(help="Folder to write the data set into.")],
    spec: Annotated[Path | None, typer.Option(help="TOML file of generator settings.")] = None,
    users: Annotated[int | None, typer.Option(min=1)] = None,
    items: Annotated[int | None, typer.Option(min=1)] = None,
    interactions: Annotated[int | None, typer.Option(min=1)] = None,
    days: Annotated[int | None, typer.Option(min=15, help="Length of the simulated span.")] = None,
    seed: int | None = None,
    activity: Annotated[
        str | None,
        typer.Option(
            help="weekly: users active all along; bursty: each user's events in 1-3 bursts of a "
            "day or two over the span, and item chains (series, complements) users follow "
            "(see data_samples/generator_bursty.toml)."
        ),
    ] = None,
) -> None:
    """Generate a realistic synthetic data set (and its hidden ground truth).

    Settings come from --spec (e.g. data_samples/generator.toml); options override them."""
    from pipelines.synthetic import GeneratorSpec
    from pipelines.synthetic import generate as run
    from pipelines.synthetic.generate import GENERATE_STEPS, load_spec

    given = {
        "users": users,
        "items": items,
        "interactions": interactions,
        "days": days,
        "seed": seed,
        "activity": activity,
    }
    base = GeneratorSpec()
    settings = (
        load_spec(spec, **given)
        if spec
        else GeneratorSpec(
            users=base.users if users is None else users,
            items=base.items if items is None else items,
            interactions=base.interactions if interactions is None else interactions,
            days=base.days if days is None else days,
            seed=base.seed if seed is None else seed,
            activity=base.activity if activity is None else activity,
        )
    )
    with steps("generate", GENERATE_STEPS, console) as report:
        paths = run(settings, out, report=report)
    console.print(
        _table(
            f"generated into {out}",
            [
                ("users", f"{settings.users:,}"),
                ("items", f"{settings.items:,}"),
                ("interaction rows", f"{paths.n_interactions:,}"),
                ("config", str(out / "config.toml")),
                ("ground truth", str(paths.ground_truth)),
            ],
        )
    )


class Source(StrEnum):
    movielens = "movielens"


@app.command("import")
@user_errors
def import_(
    source: Annotated[Source, typer.Argument(help="Format of the source data.")],
    src: Annotated[Path, typer.Argument(help="Folder holding the source files.")],
    out: Annotated[Path, typer.Option(help="Folder to write the contract tables into.")],
) -> None:
    """Convert public data (MovieLens 100K, 1M, latest-small) into the data contract."""
    from pipelines.movielens import import_movielens

    with console.status(f"importing {source.value} from {src}"):
        s = import_movielens(src, out)
    console.print(
        _table(
            f"imported MovieLens {s.format}",
            [
                ("users", f"{s.n_users:,}"),
                ("items", f"{s.n_items:,}"),
                ("interactions", f"{s.n_interactions:,}"),
                ("config", str(s.config)),
            ],
        )
    )


@app.command()
@user_errors
def validate(config: ConfigOpt) -> None:
    """Check the config and the three input tables against the data contract."""
    from pipelines.validate import validate_tables

    cfg = load_config(config, Config)
    with console.status("validating"):
        t = validate_tables(cfg.data, cfg.columns)
    ts = t.interactions["ts"]
    console.print(
        _table(
            "input is valid",
            [
                ("interactions", f"{t.interactions.height:,}"),
                ("items", f"{t.items.height:,}"),
                ("users", f"{t.users.height:,}"),
                ("from", str(ts.min())),
                ("to", str(ts.max())),
            ],
        )
    )


def _features(cfg: PipelineConfig, out: Path | None) -> Path:
    from pipelines.dataset import FEATURE_STEPS, build_features

    out = out or cfg.artifacts.root / "work"
    with steps("features", FEATURE_STEPS, console) as report:
        fs = build_features(cfg, report=report)
    fs.save(out)
    splits = fs.interactions["split"].value_counts().sort("split")
    console.print(
        _table(
            f"features written to {out}",
            [
                *[
                    (f"{r['split']} positives", f"{r['count']:,}")
                    for r in splits.iter_rows(named=True)
                ],
                ("users with history", f"{fs.history.height:,}"),
                ("items (products + ads)", f"{fs.items.height:,}"),
                (
                    "vocabulary sizes",
                    ", ".join(
                        f"{n} {getattr(fs.vocabs, n).size:,}"
                        for n in ("user", "item", "category", "brand", "token")
                    ),
                ),
                ("valid / test start", f"{fs.valid_start} / {fs.test_start}"),
            ],
        )
    )
    return out


@app.command()
@user_errors
def features(
    config: ConfigOpt,
    out: Annotated[Path | None, typer.Option(help="Folder (default: <artifacts>/work).")] = None,
) -> None:
    """Validate the inputs and build every feature table and vocabulary."""
    _features(load_config(config, Config), out)


@app.command()
@user_errors
def train(
    config: ConfigOpt,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for model.pt, vectors and train.json (default: <artifacts>/work/embeddings)."
        ),
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(
            min=1, help="Processes to shard the embedding tables over (runs itself under torchrun)."
        ),
    ] = 1,
) -> None:
    """Train the two-tower model (early stopping on validation recall) and export vectors."""
    cfg = load_config(config, Config)
    out = (out or cfg.artifacts.root / "work" / "embeddings").resolve()
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        cmd = _under_itself(
            nproc,
            "train",
            "--config",
            str(config.resolve()),
            "--out",
            str(out),
        )
        raise typer.Exit(subprocess.call(cmd))
    _train(cfg, out)


def _train(cfg: EmbeddingsConfig, out: Path) -> None:
    from embeddings.fit import fit

    main = int(os.environ.get("RANK", "0")) == 0
    with training_bar(console, enabled=main) as progress:
        summary = fit(cfg, out, progress=progress)
    if summary is None:
        return
    k = summary.recall_k
    console.print(
        _table(
            f"two-tower model written to {out}",
            [
                ("processes", str(summary.world_size)),
                (
                    "tables per rank",
                    "; ".join(
                        f"{r}: {', '.join(t)}" for r, t in sorted(summary.tables_per_rank.items())
                    ),
                ),
                ("epochs run (best)", f"{len(summary.epochs)} ({summary.best_epoch + 1})"),
                (f"valid recall@{k}", f"{summary.recall:.4f}"),
                (f"popularity recall@{k}", f"{summary.popularity_recall:.4f}"),
            ],
        )
    )


@app.command()
@user_errors
def index(
    config: ConfigOpt,
    vectors: Annotated[
        Path | None,
        typer.Option(help="Folder of the exported vectors (default: <artifacts>/work/embeddings)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for items.faiss and index.json (default: <artifacts>/work/index)."
        ),
    ] = None,
) -> None:
    """Build the item index from the exported vectors, tuned to the config's recall target."""
    cfg = load_config(config, Config)
    work = cfg.artifacts.root / "work"
    _index(cfg, vectors or work / "embeddings", out or work / "index")


def _index(cfg: EngineConfig, vectors: Path, out: Path) -> None:
    import polars as pl

    from embeddings.export import ITEMS, USERS, load_vectors
    from engine.index import build_index

    items, users = load_vectors(vectors / ITEMS), load_vectors(vectors / USERS)
    products = pl.read_parquet(vectors / ITEMS, columns=["kind"])["kind"].to_numpy() == "product"
    with console.status(f"building the index over {int(products.sum()):,} products"):
        built, figures = build_index(
            items.matrix[products], items.index[products], cfg.index, queries=users.matrix
        )
        built.save(out)
    console.print(
        _table(
            f"index written to {out}",
            [
                ("kind", built.kind),
                ("parameters", ", ".join(f"{k}={v}" for k, v in built.params.items()) or "-"),
                (f"recall@{figures['recall_k']} vs exact", f"{figures['recall']:.4f}"),
                ("build time", f"{figures['build_seconds']:.2f} s"),
                ("on GPU", str(built.on_gpu)),
            ],
        )
    )


def _nightly(
    cfg: EngineConfig, artifacts: Path | None, *, force: bool, incremental: bool = False
) -> None:
    from datetime import timedelta

    from engine.jobs.nightly import run_nightly
    from engine.jobs.ranks import Ranks
    from engine.jobs.stages import STAGES

    ranks = Ranks.join(timedelta(minutes=cfg.jobs.rank_wait_minutes))
    with steps("nightly", len(STAGES) + 1, console, enabled=ranks.is_main) as report:
        result = run_nightly(
            cfg, artifacts, force=force, incremental=incremental, report=report, ranks=ranks
        )
    if not ranks.is_main:
        return
    root = result.version
    if result.reason == "unchanged":
        console.print(f"inputs and config unchanged: nothing new published; live version {root}")
        return
    f = result.figures
    rows = [("version", root.name if root else "-"), ("why", result.reason)]
    rows += [(f"{name} stage", f"{s:.1f} s") for name, s in result.seconds.items()]
    if f:
        train, rerank, ads = f.get("train", {}), f.get("rerank", {}), f.get("ads", {})
        rows += [
            (f"two-tower valid recall@{train.get('recall_k')}", f"{train.get('valid_recall'):.4f}"),
            (
                "re-ranker holdout NDCG@10 (two-tower)",
                f"{rerank.get('holdout_ndcg'):.4f} ({rerank.get('holdout_two_tower_ndcg') or 0:.4f})",
            ),
            ("re-ranker training lists", f"{rerank.get('lists', 0):,}"),
        ]
        if rerank.get("fallback"):
            rows.append(
                (
                    "re-ranker NOT used; lists ordered by",
                    f"{rerank.get('order')}: {rerank['fallback']}",
                )
            )
        if ads.get("trained"):
            rows.append(
                (
                    "pCTR AUC, ECE raw -> calibrated",
                    f"{ads['auc']:.3f}, {ads['ece_raw']:.4f} -> {ads['ece_calibrated']:.4f}",
                )
            )
    console.print(_table("nightly", rows))
    if root is not None:
        for name, path in (
            ("product lists", root / "recs" / "kind=product"),
            ("ad lists", root / "recs" / "kind=ad"),
            ("report", root / "report" / "index.html"),
            ("metrics", root / "report" / "metrics.json"),
            ("manifest", root / "manifest.json"),
        ):
            console.print(f"[bold]{name}:[/] {path}", soft_wrap=True, highlight=False)


@app.command()
@user_errors
def nightly(
    config: ConfigOpt,
    artifacts: Annotated[
        Path | None, typer.Option(help="Artifacts root (default: the config's [artifacts] root).")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Publish even if the quality gate fails or nothing changed.")
    ] = False,
    incremental: Annotated[
        bool,
        typer.Option(
            help="Reuse the live models; new items and users join by content (a full retrain "
            "runs anyway past [jobs] full_retrain_days)."
        ),
    ] = False,
    nproc: Annotated[
        int,
        typer.Option(
            min=1,
            help="Processes on this machine that split the per-user work (runs itself under "
            "torchrun; on several machines, start it with torchrun yourself).",
        ),
    ] = 1,
) -> None:
    """Run every stage (resuming an interrupted run), gate and publish a new version."""
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        cmd = _under_itself(
            nproc,
            "nightly",
            "--config",
            str(config.resolve()),
            *(["--artifacts", str(artifacts.resolve())] if artifacts is not None else []),
            *(["--force"] if force else []),
            *(["--incremental"] if incremental else []),
        )
        raise typer.Exit(_under_torchrun(cmd))
    _nightly(load_config(config, Config), artifacts, force=force, incremental=incremental)


def _evaluate(cfg: EngineConfig, out: Path) -> None:
    from engine.evaluation.evaluate import evaluate
    from engine.evaluation.report import write_report

    with steps(
        "evaluate", 12 + cfg.rerank.training_cutoffs + 3 * len(cfg.evaluation.baselines), console
    ) as report:
        doc = evaluate(cfg, report=report)
    page = write_report(out, {**doc, "config": cfg.model_dump(mode="json")})
    k = doc["verdict"]["metric"]
    rows = [(f"{m['label']} {k}", f"{m['metrics'][k]:.4f}") for m in doc["methods"].values()]
    rows.append(("candidate recall", f"{doc['candidates']['recall']:.4f}"))
    v = doc["verdict"]
    if "best_baseline" in v:
        rows.append(
            ("final - best baseline", f"{v['final_minus_best']:+.4f} (p = {v['p_value']:.3g})")
        )
    console.print(_table("evaluation", rows))
    console.print(f"[bold]report:[/] {page}", soft_wrap=True, highlight=False)
    console.print(f"[bold]metrics:[/] {out / 'metrics.json'}", soft_wrap=True, highlight=False)


def _compare(a: Path, b: Path, match: str | None) -> None:
    from engine.evaluation.compare import DEFAULT_MATCH, compare

    t = Table(title=f"A = {a}\nB = {b}", title_justify="left")
    for name in ("figure", "A", "B", "B - A"):
        t.add_column(name, justify="left" if name == "figure" else "right")
    for key, va, vb, d in compare(a, b, match=match or DEFAULT_MATCH):
        t.add_row(
            key,
            *("-" if v is None else f"{v:.4f}" for v in (va, vb)),
            "-" if d is None else f"{d:+.4f}",
        )
    console.print(t)


@app.command()
@user_errors
def evaluate(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="The TOML config file: refit and score on its test window."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default: <artifacts root>/report).")
    ] = None,
    compare: Annotated[
        tuple[Path, Path] | None,
        typer.Option(
            help="Two reports (metrics.json, a report or version folder, or an artifacts root): "
            "print B - A for every figure."
        ),
    ] = None,
    match: Annotated[
        str | None,
        typer.Option(help="With --compare: a regular expression over the figures' dotted paths."),
    ] = None,
) -> None:
    """Offline evaluation: every stage and the baselines (popularity, item-kNN, EASE, ALS) on
    the test window; writes index.html (plots embedded) and metrics.json."""
    if compare is not None:
        _compare(*compare, match)
        return
    if config is None:
        raise typer.BadParameter("give --config FILE, or --compare A B", param_hint="--config")
    cfg = load_config(config, Config)
    _evaluate(cfg, out or Path(cfg.artifacts.root) / "report")


@app.command()
@user_errors
def demo(config: ConfigOpt = SAMPLE_CONFIG) -> None:
    """Run the nightly job on the sample data shipped in data_samples/."""
    console.print(f"[bold]recengine demo[/] on {config}")
    _nightly(load_config(config, Config), None, force=False)


@app.command()
@user_errors
def serve(
    artifacts: Annotated[Path, typer.Option(help="Artifacts root (its `current` version).")],
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the service beyond this host.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding a bearer token required on /events and /admin/*."),
    ] = None,
    reload_interval: Annotated[
        float, typer.Option(min=0.05, help="Seconds between looks at `current`.")
    ] = 1.0,
    threads: Annotated[int, typer.Option(min=1, help="Requests one worker computes at once.")] = 1,
) -> None:
    """Serve lists, similar items and real-time events over HTTP (FastAPI on uvicorn)."""
    import tempfile

    import uvicorn

    from serving.http import ENV, Settings, unset_library_threads

    unset = unset_library_threads()
    if unset:
        os.environ.update(unset)
        if workers == 1:  # this process loaded the libraries already: start afresh with them set
            os.execv(sys.executable, [sys.executable, "-m", "engine.cli", *sys.argv[1:]])
    token = None
    if token_file is not None:
        token = require_file(token_file).read_text().strip()
        if not token:
            raise ConfigError(token_file, "the token file is empty")
    settings = Settings(
        artifacts.resolve(), token=token, reload_interval=reload_interval, threads=threads
    )
    os.environ[ENV] = settings.to_env()
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="recengine-metrics-")
    console.print(
        f"[bold]recengine serve[/] {settings.artifacts} on http://{host}:{port} "
        f"({workers} worker{'s' if workers > 1 else ''}"
        f"{', token required on /events and /admin' if token else ''})",
        highlight=False,
    )
    uvicorn.run(
        "serving.http:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # `torchrun -m engine.cli train ...` runs each rank through here
    app()
