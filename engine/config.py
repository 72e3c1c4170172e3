"""The whole config file: every layer's sections. The CLI and the jobs load this schema."""

from __future__ import annotations

from embeddings.config import EmbeddingsConfig
from engine.ads.auction import AuctionConfig
from engine.ads.config import PctrConfig
from engine.candidates.config import CandidatesConfig
from engine.evaluation.config import EvaluationConfig
from engine.index.config import IndexConfig
from engine.jobs.config import JobsConfig
from engine.rerank.config import RankerConfig
from engine.rules import RulesConfig


class EngineConfig(EmbeddingsConfig):
    """Pipeline, model and training sections, plus `[index]`, `[candidates]`, `[rerank]`,
    `[rules]`, `[ads]`, `[auction]`, `[jobs]` and `[evaluation]`."""

    index: IndexConfig = IndexConfig()
    candidates: CandidatesConfig = CandidatesConfig()
    rerank: RankerConfig = RankerConfig()
    rules: RulesConfig = RulesConfig()
    ads: PctrConfig = PctrConfig()
    auction: AuctionConfig = AuctionConfig()
    jobs: JobsConfig = JobsConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
