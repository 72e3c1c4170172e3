"""The HTTP service's request and response bodies (pydantic): what the OpenAPI document shows,
and what turns a malformed request into a 422 that names the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.config import EventName

MAX_K = 1000
"""The longest list a request may ask for."""
MAX_LIST = 1000
"""The most ids in a history, an exclude list, a batch or one post of events."""
MAX_ID = 256
"""The longest user or item id (characters)."""

EARLIEST, LATEST = datetime(1970, 1, 2), datetime(2200, 1, 1)

Id = Field(min_length=1, max_length=MAX_ID)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Filters(Body):
    """Which products a list may hold (see `serving.filters`)."""

    category: str | None = Field(default=None, max_length=MAX_ID)
    brand: str | list[str] | None = Field(default=None, max_length=MAX_LIST)
    min_price: float | None = None
    max_price: float | None = None


class RecommendRequest(Body):
    """A list for a user id, or for a history (a visitor the version does not know)."""

    user_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID)
    history: list[str] | None = Field(default=None, max_length=MAX_LIST)
    user_features: dict[str, str] | None = Field(default=None, max_length=64)
    exclude: list[str] = Field(default_factory=list, max_length=MAX_LIST)
    filters: Filters | None = None
    k: int = Field(default=10, ge=1, le=MAX_K)
    kind: Literal["product", "ad", "mixed"] = "product"
    explain: bool = False


class BatchRequest(Body):
    user_ids: list[str] = Field(min_length=1, max_length=MAX_LIST)
    k: int = Field(default=10, ge=1, le=MAX_K)
    kind: Literal["product", "ad"] = "product"


class EventIn(Body):
    """One interaction, in the data contract's shape; `ts` (default: now) is UTC."""

    user_id: str = Id
    item_id: str = Id
    event: EventName = "view"
    ts: datetime | None = None
    value: float | None = None

    @field_validator("ts")
    @classmethod
    def _naive_utc(cls, v: datetime | None) -> datetime | None:
        """Naive UTC, as every timestamp in recengine, within years 1970-2199."""
        if v is None:
            return v
        if v.tzinfo is not None:
            v = v.astimezone(UTC).replace(tzinfo=None)
        if not EARLIEST <= v < LATEST:
            raise ValueError(f"ts must fall between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
        return v


class Listed(BaseModel):
    """One listed item: ads carry pctr, bid and ecpm; a mixed list's rows their kind."""

    item_id: str
    rank: int
    score: float
    kind: Literal["product", "ad"] | None = None
    pctr: float | None = None
    bid: float | None = None
    ecpm: float | None = None
    why: str | None = None


class RecommendResponse(BaseModel):
    version: str
    user_id: str | None
    kind: str
    items: list[Listed]


class UserList(BaseModel):
    user_id: str
    items: list[Listed]


class BatchResponse(BaseModel):
    version: str
    kind: str
    lists: list[UserList]


class SimilarResponse(BaseModel):
    version: str
    item_id: str
    items: list[Listed]


class EventsResponse(BaseModel):
    accepted: int
    ids: list[int]


class VersionResponse(BaseModel):
    version: str
    events_through: int
    live_users: int
    reloads: int


class ReloadResponse(BaseModel):
    changed: bool
    version: str
