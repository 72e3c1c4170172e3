"""The whole config file: every layer's sections, and the `[rules]` section of the lists
(`engine.rules`). The CLI and the jobs load this schema."""

from __future__ import annotations

from pydantic import Field

from embeddings.config import EmbeddingsConfig
from engine.ads.config import AdsConfig, AuctionConfig
from engine.candidates.config import CandidatesConfig
from engine.evaluation.config import EvaluationConfig
from engine.index.config import IndexConfig
from engine.jobs.config import JobsConfig
from engine.rerank.config import RerankConfig
from pipelines.config import Section


class RulesConfig(Section):
    """The `[rules]` section."""

    max_per_brand: int | None = Field(default=None, ge=1)
    """At most this many items of one brand in a list (None: no cap)."""
    max_per_category: int | None = Field(default=None, ge=1)
    """At most this many items of one top category in a list (None: no cap)."""
    mmr_lambda: float = Field(default=1.0, ge=0.0, le=1.0)
    """1: rank by score alone; lower trades score for dissimilarity to what is already chosen
    (maximal marginal relevance over item vectors)."""
    ad_slots: tuple[int, ...] = (3, 8)
    """0-based positions of ads in a mixed list with fixed slots (`mix_ads`)."""
    ad_exchange_rate: float = Field(default=1.0, gt=0)
    """Revenue per unit of organic score: an ad displaces an organic item only when its
    expected revenue beats the item's score x this rate (`allocate_slots`)."""
    max_ads_in_list: int = Field(default=2, ge=0)


class EngineConfig(EmbeddingsConfig):
    """Pipeline, model and training sections, plus `[index]`, `[candidates]`, `[rerank]`,
    `[rules]`, `[ads]`, `[auction]`, `[jobs]` and `[evaluation]`."""

    index: IndexConfig = IndexConfig()
    candidates: CandidatesConfig = CandidatesConfig()
    rerank: RerankConfig = RerankConfig()
    rules: RulesConfig = RulesConfig()
    ads: AdsConfig = AdsConfig()
    auction: AuctionConfig = AuctionConfig()
    jobs: JobsConfig = JobsConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
