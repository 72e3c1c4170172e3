"""Typed configuration for the pipeline layer, loaded from one TOML file.

Each component declares its settings as a frozen pydantic model, documented where each field is
declared. Unknown keys and bad values are errors that name the key path (``split.valid_start``),
and a config round-trips through ``model_dump`` / JSON. Layers above extend `PipelineConfig`
with their own sections; `load_config` works for any of them.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Self, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.errors import ConfigError
from pipelines.io import atomic_path

EventName = Literal["impression", "view", "click", "add_to_cart", "purchase", "rating"]
EVENTS: tuple[str, ...] = ("impression", "view", "click", "add_to_cart", "purchase", "rating")


class Section(BaseModel):
    """Base of every config section: frozen, no unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    """Where the three input tables are (Parquet or CSV), relative to the config file."""

    interactions: Path
    items: Path
    users: Path
    ground_truth: Path | None = None
    """Folder of the generator's hidden model (only for generated data): enables oracle metrics."""
    events: Path | None = None
    """The service's event log (`recengine serve`, `POST /events`), whose events join the
    interactions; default: `<artifacts root>/events/log.sqlite` when it exists. The nightly
    reads a frozen copy and lets go of the events only after publishing them."""


class ColumnsConfig(Section):
    """Names of the data-contract columns in the input files (defaults follow the contract)."""

    user_id: str = "user_id"
    item_id: str = "item_id"
    ts: str = "ts"
    event: str = "event"
    value: str = "value"
    user_attributes: tuple[str, ...] | None = None
    """Categorical user columns used as features; None means every other column of users."""


class SplitConfig(Section):
    """Temporal split: train < valid_start <= valid < test_start <= test.

    Give the cutoffs as TOML datetimes, or as day counts before the last interaction
    (`valid_days`, `test_days`). `leave_last_out` puts each user's last interaction in test and
    the one before it in valid instead. `holdout` puts each user's latest `holdout_share` of
    interactions (at least one) in test and the latest share of the rest in valid: the split
    for sites whose users come back rarely, where a global date catches few of them.
    """

    strategy: Literal["temporal", "leave_last_out", "holdout"] = "temporal"
    valid_start: datetime | None = None
    test_start: datetime | None = None
    valid_days: float | None = Field(default=None, gt=0)
    test_days: float | None = Field(default=None, gt=0)
    holdout_share: float = Field(default=0.2, gt=0, lt=1)
    """With `holdout`: each user's latest share of interactions held out (test, then valid)."""

    @field_validator("valid_start", "test_start")
    @classmethod
    def _naive_utc(cls, v: datetime | None) -> datetime | None:
        """Timestamps are naive UTC everywhere in recengine."""
        if v is not None and v.tzinfo is not None:
            v = v.astimezone(UTC).replace(tzinfo=None)
        return v

    @model_validator(mode="after")
    def _cutoffs_given(self) -> SplitConfig:
        if self.strategy != "temporal":
            return self
        absolute = self.valid_start is not None and self.test_start is not None
        relative = self.valid_days is not None and self.test_days is not None
        if absolute == relative:
            raise ValueError(
                "temporal split needs either valid_start and test_start, or valid_days and test_days"
            )
        if (
            self.valid_start is not None
            and self.test_start is not None
            and self.valid_start >= self.test_start
        ):
            raise ValueError("valid_start must be before test_start")
        return self


def default_event_weights() -> dict[EventName, float]:
    """The default weight of each event (impressions are not positives)."""
    return {
        "impression": 0.0,
        "view": 1.0,
        "click": 1.0,
        "add_to_cart": 2.0,
        "purchase": 4.0,
        "rating": 1.0,
    }


class FeaturesConfig(Section):
    """How features are built from the training window."""

    history_length: int = Field(default=50, ge=1, le=10_000)
    """Last N positive items kept per user, oldest first."""
    price_buckets: int = Field(default=10, ge=2, le=1000)
    """Price is bucketed by quantiles of the item table."""
    title_vocab_size: int = Field(default=50_000, ge=1)
    """Most frequent title tokens kept; rarer ones map to the OOV index."""
    min_token_count: int = Field(default=2, ge=1)
    popularity_windows_days: tuple[float, ...] = (1.0, 7.0, 30.0)
    affinity_half_life_days: float = Field(default=30.0, gt=0)
    event_weights: dict[EventName, float] = Field(default_factory=default_event_weights)
    """Weight of each event; weight 0 means the event is not a positive (impressions)."""


class BatchesConfig(Section):
    """Size of the KeyedJaggedTensor batches."""

    batch_size: int = Field(default=1024, ge=1)


class ArtifactsConfig(Section):
    """Where outputs go; relative to the config file."""

    root: Path = Path("artifacts")


class PipelineConfig(Section):
    """The whole pipeline-layer config: one TOML file."""

    data: DataConfig
    columns: ColumnsConfig = ColumnsConfig()
    split: SplitConfig = SplitConfig(valid_days=7, test_days=7)
    features: FeaturesConfig = FeaturesConfig()
    batches: BatchesConfig = BatchesConfig()
    artifacts: ArtifactsConfig = ArtifactsConfig()

    def with_base_dir(self, base: Path) -> Self:
        """Resolve the relative paths against `base` (the config file's folder)."""

        def res(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p).resolve())

        data = self.data.model_copy(
            update={
                "interactions": res(self.data.interactions),
                "items": res(self.data.items),
                "users": res(self.data.users),
                "ground_truth": res(self.data.ground_truth),
                "events": res(self.data.events),
            }
        )
        artifacts = self.artifacts.model_copy(update={"root": res(self.artifacts.root)})
        return self.model_copy(update={"data": data, "artifacts": artifacts})


C = TypeVar("C", bound=PipelineConfig)


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


@overload
def load_config(path: Path | str) -> PipelineConfig: ...
@overload
def load_config(path: Path | str, schema: type[C]) -> C: ...
def load_config(path: Path | str, schema: type[PipelineConfig] = PipelineConfig) -> PipelineConfig:
    """Read and validate a TOML config; relative paths resolve against its folder.

    Raises:
        ConfigError: the file is missing, is not TOML, or has unknown keys or bad values
            (each named by its key path).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "config file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"not valid TOML: {exc}") from None
    try:
        cfg = schema.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"  {_where(err['loc'])}: {msg}")
        raise ConfigError(path, "invalid config:\n" + "\n".join(problems)) from None
    return cfg.with_base_dir(path.parent.resolve())


def _toml_value(v: object) -> str:
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def write_data_config(
    path: Path, *, split: dict[str, object], ground_truth: str | None = None, comment: str = ""
) -> Path:
    """Write a minimal config next to `interactions/items/users.parquet` that runs as-is.

    `split` holds the [split] keys (e.g. ``{"valid_days": 7, "test_days": 7}``); the file is
    validated by loading it back before it is put in place.
    """
    lines = [f"# {line}" for line in comment.splitlines()] + [
        "[data]",
        'interactions = "interactions.parquet"',
        'items = "items.parquet"',
        'users = "users.parquet"',
    ]
    if ground_truth:
        lines.append(f"ground_truth = {_toml_value(ground_truth)}")
    lines += ["", "[split]"] + [f"{k} = {_toml_value(v)}" for k, v in split.items()]
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        load_config(tmp)
    return path
