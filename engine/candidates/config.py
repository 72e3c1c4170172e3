"""Settings of candidate generation: the `[candidates]` section."""

from __future__ import annotations

from pydantic import Field

from pipelines.config import Section


class CandidatesConfig(Section):
    """How many candidates each source gives a user, and how the heuristic sources look.

    A size of 0 turns a source off (e.g. `repeat = 0` where people do not buy the same thing
    twice). The union of all sources, duplicates merged, goes to the re-ranker.
    """

    ann: int = Field(default=200, ge=0)
    """Two-tower nearest neighbours of the user vector."""
    covisit: int = Field(default=100, ge=0)
    """Items co-visited with the user's recent items."""
    content: int = Field(default=50, ge=0)
    """Content neighbours (content-only vectors) of the user's last items."""
    trending: int = Field(default=50, ge=0)
    """Recently popular items in the user's top categories."""
    repeat: int = Field(default=20, ge=0)
    """Items the user already interacted with, most recent first."""
    cold_user: int = Field(default=100, ge=0)
    """For users with no history: popularity among users with the same attributes."""
    ease: int = Field(default=100, ge=0)
    """EASE (closed-form item-to-item model) over the user's whole history; on when the
    products number at most `ease_max_items`."""
    knn: int = Field(default=100, ge=0)
    """Item-kNN (cosine on co-occurrence) over the user's whole history."""
    transitions: int = Field(default=50, ge=0)
    """Items that followed the user's last items in other users' histories."""

    recent_items: int = Field(default=10, ge=1)
    """History items (the last N) that seed co-visitation and content neighbours."""
    covisit_window_hours: float = Field(default=24.0, gt=0)
    """Two items are co-visited when one user touched both within this many hours."""
    covisit_half_life_days: float = Field(default=14.0, gt=0)
    """Older co-visits count less (by the age of the later event)."""
    covisit_user_events: int = Field(default=30, ge=2)
    """Each user's last N distinct items form pairs (bounds the self-join)."""
    neighbours: int = Field(default=50, ge=1)
    """Neighbours kept per item, for co-visitation and content."""
    ease_lambda: float = Field(default=200.0, gt=0)
    """EASE's L2 penalty: higher for sparser data."""
    ease_max_items: int = Field(default=30_000, ge=1)
    """EASE holds a dense products x products matrix (3.6 GB of float32 at 30k): above this
    many products it is off and item-kNN carries the item-to-item signal alone."""
    knn_neighbours: int = Field(default=100, ge=1)
    """Most similar items kept per item by item-kNN."""
    knn_shrink: float = Field(default=10.0, ge=0)
    """Added to the cosine's denominator: rare co-occurrences count less."""
    transition_span: int = Field(default=3, ge=1)
    """An item counts as following another within this many positions of a user's history."""
    trending_days: float = Field(default=7.0, gt=0)
    top_categories: int = Field(default=3, ge=1)
