"""Typed settings of the two-tower model and its training: the `[model]` and `[train]` sections.

`EmbeddingsConfig` is the pipeline config plus these two sections; `load_config(path,
EmbeddingsConfig)` reads one TOML file for both layers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.config import PipelineConfig, Section


class ModelConfig(Section):
    """Shape of the two towers."""

    dim: int = Field(default=64, ge=4, le=1024)
    """Dimension of the final, L2-normalised user and item vectors."""
    embedding_dim: int = Field(default=64, ge=4, le=1024, multiple_of=4)
    """Dimension of every embedding table (a multiple of 4, as TorchRec's kernels want)."""
    hidden: tuple[int, ...] = (128,)
    """Hidden layer sizes of each tower's MLP (ReLU between layers)."""
    id_dropout: float = Field(default=0.25, ge=0.0, lt=1.0)
    """Share of training examples whose user id and item id are replaced by the OOV row, so the
    content path (history, attributes, category, brand, tokens, price) learns to stand alone."""


class TrainConfig(Section):
    """How the two-tower model is trained."""

    epochs: int = Field(default=8, ge=1)
    batch_size: int = Field(default=1024, ge=8)
    """Examples per step and per process (in-batch negatives come from the same batch)."""
    temperature: float = Field(default=0.2, gt=0.0)
    """Softmax temperature on cosine similarities."""
    logq_correction: bool = True
    """Subtract log of each item's sampling frequency from its logit (unbiased full softmax);
    without it in-batch negatives push popular items down."""
    random_negatives: int = Field(default=0, ge=0)
    """Extra uniformly drawn negative items per batch, shared by its examples."""
    sparse_optimizer: Literal["rowwise_adagrad", "adagrad", "sgd"] = "rowwise_adagrad"
    """TorchRec fused optimizer of the embedding tables (these three run on CPU and GPU)."""
    sparse_lr: float = Field(default=0.01, gt=0.0)
    dense_lr: float = Field(default=0.001, gt=0.0)
    distinct_items: bool = True
    """Train on each user's first interaction with an item only: retrieval's task is finding
    items new to the user, and repeats would teach it to point back at the history."""
    recall_k: int = Field(default=50, ge=1)
    """Early stopping watches validation recall@recall_k (full corpus, exact search)."""
    patience: int = Field(default=2, ge=1)
    """Epochs without a better validation recall before training stops."""
    eval_users: int = Field(default=5000, ge=1)
    """Validation users sampled for early stopping (all of them when fewer)."""
    seed: int = 0


class EmbeddingsConfig(PipelineConfig):
    """Pipeline config plus the two-tower `[model]` and `[train]` sections."""

    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
