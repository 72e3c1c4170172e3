"""Settings of the re-ranker: the `[rerank]` section (no LightGBM import here)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.config import Section


class RerankConfig(Section):
    """Learning-to-rank settings: the `[rerank]` section.

    The objective is one of LightGBM's listwise ranking objectives. XE-NDCG (`rank_xendcg`,
    the default) and LambdaRank optimise the same list order; on the sample data XE-NDCG
    scores higher and varies less with the seed (few positives per list make LambdaRank's
    pairwise gradients noisy; BENCHMARKS.md has both).
    """

    objective: Literal["rank_xendcg", "lambdarank"] = "rank_xendcg"
    num_leaves: int = Field(default=63, ge=2)
    other_leaves: list[int] = Field(default_factory=lambda: [15])
    """Also fitted, in order, while the fits so far took under `choice_seconds`: the ranker
    with the best held-out NDCG is kept (but see `cheaper_within_noise`), and every try is
    recorded (`rerank.tried`). How many leaves a few thousand lists can fill differs by data
    set."""
    cheaper_within_noise: bool = True
    """Keep the cheapest ranker to predict (trees x depth) whose held-out NDCG is not
    significantly below the best's (the 95% paired bootstrap interval of the per-list
    difference reaches 0): every list of every night and every request pays for the trees,
    and a gain the held-out lists cannot tell from noise does not pay for 2.5x of them."""
    choice_seconds: float = Field(default=120.0, ge=0)
    learning_rate: float = Field(default=0.05, gt=0)
    num_boost_round: int = Field(default=1500, ge=1)
    min_data_in_leaf: int = Field(default=200, ge=1)
    lambda_l2: float = Field(default=10.0, ge=0)
    feature_fraction: float = Field(default=0.9, gt=0, le=1)
    early_stopping_rounds: int = Field(default=50, ge=1)
    ndcg_at: int = Field(default=10, ge=1)
    """Early stopping watches validation NDCG at this depth."""
    seed: int = 0
    training_cutoffs: int = Field(default=4, ge=1)
    """Lists are made at this many cutoffs (the latest, then every `cutoff_step_days` back)."""
    cutoff_step_days: float = Field(default=7.0, gt=0)
    label_days: float = Field(default=7.0, gt=0)
    """Days after a cutoff whose interactions label its lists."""
    users_per_cutoff: int | None = Field(default=5_000, ge=1)
    """At most this many users' lists per cutoff (a random sample of the users active in its
    label window; None: all): memory and fit time stay flat as the user base grows, and a few
    thousand lists per cutoff already carry most of what the ranker can learn."""
    lists: Literal["auto", "temporal", "per_user"] = "auto"
    """Where training lists are cut. "temporal": at the global cutoffs above, which catch
    the users active in each label window (every user, on a shop visited weekly). "per_user":
    at each user's own cutoff, their latest `label_share` of interactions as labels and the
    rest as history, which catches every returning user however rarely they come (rating
    sites, most shops). "auto" takes per-user cutoffs when the split is not temporal or the
    temporal cutoffs' label windows hold fewer than half the users per-user cutoffs would."""
    label_share: float = Field(default=0.2, gt=0, lt=1)
    """Per-user cutoffs: each user's latest share of interactions (at least one) labels."""
    per_user_lists: int | None = Field(default=15_000, ge=1)
    """Per-user cutoffs: at most this many users' lists per cut (a random sample; None: all)."""
    target_lists: int = Field(default=5_000, ge=0)
    """Per-user cutoffs: while the lists number fewer than this, each user is cut again
    before the labels of the last cut (a shop of a few thousand users, or users with short
    histories, still gives the ranker enough lists), up to `per_user_cuts` cuts."""
    per_user_cuts: int = Field(default=2, ge=1)
    """Per-user cutoffs: at most this many cuts per user (each costs a two-tower fit)."""
    min_lists: int = Field(default=300, ge=0)
    """Fewer training lists than this and no ranker is fitted: the lists are ordered by the
    candidate signal that ranks the lists best (two-tower, EASE, item-kNN, transitions), and
    the job says so. A fitted ranker that ranks its held-out lists no better than that
    signal is not published either (`engine.rerank.fallback`)."""
    negatives_per_list: int = Field(default=150, ge=0)
    """Training lists keep every positive and at most this many of their other candidates
    (a seeded random sample; 0: all). A list of 500 candidates with one positive teaches
    little more from its 500th negative than from its 150th, and the fit's time grows with
    the rows."""
    popularity_dropout: float = Field(default=0.1, ge=0, lt=1)
    """Share of (cutoff, item) pairs whose popularity features are hidden in the training
    lists, as they are for items with no history: the ranker then learns to rank an unknown
    item by what else it knows instead of burying it."""
    holdout_share: float = Field(default=0.2, gt=0, lt=1)
    """Share of users whose lists early-stop the fit."""
    early_exit_trees: int = Field(default=30, ge=0)
    """Scoring lists: every candidate is scored with this many trees first and only each
    user's best `early_exit_keep` go on through the rest of the model (0: every candidate
    through every tree). Most candidates are settled long before the last tree, and the
    prediction is most of the cost of the batch lists."""
    early_exit_keep: int = Field(default=100, ge=1)
    """Candidates per user scored with the whole model after the early exit (never fewer
    than the rows the rules see for a list: 5 x k, at least 50)."""
    explain_shap_trees: int = Field(default=0, ge=0)
    """Explaining the lists (`why`): the first this many trees are attributed with TreeSHAP,
    the rest by their decision paths (0: every tree by its path). Either way a row's
    contributions and the bias sum to its score; TreeSHAP costs leaves x depth^2 per tree and
    row, enough over a large model to outlast the scoring (`engine.rerank.explain`)."""

    def params(self) -> dict[str, object]:
        return {
            "objective": self.objective,
            "metric": "ndcg",
            "ndcg_eval_at": [self.ndcg_at],
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_data_in_leaf,
            "lambda_l2": self.lambda_l2,
            "feature_fraction": self.feature_fraction,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }
