"""Settings of the LambdaRank re-ranker: the `[rerank]` section (no LightGBM import here)."""

from __future__ import annotations

from pydantic import Field

from pipelines.config import Section


class RankerConfig(Section):
    """LambdaRank settings: the `[rerank]` section."""

    num_leaves: int = Field(default=31, ge=2)
    learning_rate: float = Field(default=0.05, gt=0)
    num_boost_round: int = Field(default=300, ge=1)
    min_data_in_leaf: int = Field(default=20, ge=1)
    feature_fraction: float = Field(default=0.9, gt=0, le=1)
    early_stopping_rounds: int = Field(default=30, ge=1)
    ndcg_at: int = Field(default=10, ge=1)
    """Early stopping watches validation NDCG at this depth."""
    seed: int = 0

    def params(self) -> dict[str, object]:
        return {"objective": "lambdarank", "metric": "ndcg", "ndcg_eval_at": [self.ndcg_at],
                "num_leaves": self.num_leaves, "learning_rate": self.learning_rate,
                "min_data_in_leaf": self.min_data_in_leaf,
                "feature_fraction": self.feature_fraction, "seed": self.seed,
                "deterministic": True, "force_col_wise": True, "verbosity": -1}
