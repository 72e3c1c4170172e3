"""The shape of the evaluation document: what `evaluate` returns and `metrics.json` holds
(its keys in the order they are written). Plain dicts at run time, so the JSON is what the
dicts give."""

from __future__ import annotations

from typing import NotRequired, TypedDict


class BaselineChoice(TypedDict):
    """One baseline's parameters as tuned on the validation window."""

    params: dict[str, float | None]
    valid_ndcg: float
    tried: list[dict[str, object]]  # each setting: params, valid_ndcg@<k>


class EvaluationProtocol(TypedDict):
    fit: str
    scored: str
    split: str
    list_mode: str
    test_start: str
    users: int
    test_users: int
    relevant_items: int
    eligible_items: int
    ks: list[int]
    epochs: int
    ranker_trees: int
    ranker_fallback: str | None
    ranker_tried: str
    ranker_holdout_ndcg: float
    ranker_num_leaves: int | None
    ranker_orders: dict[str, float]
    training_lists: int
    gain: str
    cold_items: int
    baselines: dict[str, BaselineChoice]


class CandidateFigures(TypedDict):
    """The candidate set's recall of the test window's relevant items."""

    recall: float
    mean_size: float
    items_found: int
    relevant_items: int


class MethodFigures(TypedDict):
    """One method's figures; metric keys are `<metric>@<k>`."""

    label: str
    stage: str
    metrics: dict[str, float]
    curve: dict[str, dict[str, float]]  # metric -> str(k) -> mean
    beyond: dict[str, float]
    segments: dict[str, dict[str, int | float | None]]  # segment -> users and metrics
    cold_items: dict[str, float | None]
    oracle_share: NotRequired[dict[str, float | None]]  # with an oracle


class Paired(TypedDict):
    """A paired comparison of two methods' per-user figures."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float


class Significance(Paired):
    metric: str


class Verdict(TypedDict):
    """The final list against the best baseline (see `verdict_of`)."""

    metric: str
    final: float
    decided: NotRequired[bool]  # False: too few users to name a winner
    users: NotRequired[int]
    min_users: NotRequired[int]
    reason: NotRequired[str]
    best_baseline: NotRequired[str]
    best_baseline_value: NotRequired[float]
    final_minus_best: NotRequired[float]
    p_value: NotRequired[float]
    beats_best_baseline: NotRequired[bool]
    oracle_share: NotRequired[float | None]
    oracle_candidates_share: NotRequired[float | None]


class Evaluation(TypedDict):
    """Every figure of the evaluation report."""

    protocol: EvaluationProtocol
    metric_names: list[str]
    candidates: CandidateFigures
    methods: dict[str, MethodFigures]
    significance: dict[str, Significance]
    verdict: Verdict
    ads: dict[str, object] | None
    seconds: dict[str, float]
    beyond_k: int
