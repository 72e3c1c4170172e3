"""The two-tower retrieval model: a user tower and an item tower over TorchRec embedding bags.

User tower: user id, the history bag (items interacted with before, mean-pooled) and attribute
tokens. Item tower: item id, category path prefixes, brand, title and tag tokens, price bucket,
and a log-popularity bucket (the softmax's strongest single signal, which a bounded cosine
otherwise has to squeeze into the geometry of the ids).
Each tower concatenates its pooled embeddings, runs a small MLP and L2-normalises, so a dot
product of a user and an item vector is their cosine similarity.

Ids carry collaborative signal; every other feature carries content. Row 0 of every table is the
OOV row: an id replaced by 0 (id dropout in training, or an id never seen) leaves the content
path alone to place the user or item.

Example:
    >>> sizes = TableSizes(user=10, item=20, user_attr=5, category=6, brand=4, token=30, price=11)
    >>> model = TwoTower(sizes, ModelConfig(dim=8, embedding_dim=8, hidden=(16,)))
    >>> model.encode_items(item_kjt).shape    # (B, 8), rows of norm 1
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from embeddings.config import ModelConfig
from pipelines.batches import ITEM_KEYS, POPULARITY_BUCKETS, USER_KEYS
from pipelines.dataset import Vocabularies

USER_TABLES: dict[str, tuple[str, PoolingType]] = {
    # table name: (feature it serves, pooling)
    "user_id": ("user_id", PoolingType.SUM),
    "history": ("user_history", PoolingType.MEAN),
    "user_attr": ("user_attrs", PoolingType.MEAN),
}
ITEM_TABLES: dict[str, tuple[str, PoolingType]] = {
    "item_id": ("item_id", PoolingType.SUM),
    "category": ("item_category", PoolingType.MEAN),
    "brand": ("item_brand", PoolingType.SUM),
    "token": ("item_title", PoolingType.MEAN),
    "price": ("item_price", PoolingType.SUM),
    "popularity": ("item_popularity", PoolingType.SUM),
}


@dataclass(frozen=True)
class TableSizes:
    """Rows of each embedding table (vocabulary size including the OOV row 0)."""

    user: int
    item: int
    user_attr: int
    category: int
    brand: int
    token: int
    price: int

    @classmethod
    def from_vocabs(cls, v: Vocabularies, *, price_buckets: int) -> TableSizes:
        # price buckets are 0 (missing) .. price_buckets
        return cls(
            user=v.user.size,
            item=v.item.size,
            user_attr=v.user_attr.size,
            category=v.category.size,
            brand=v.brand.size,
            token=v.token.size,
            price=price_buckets + 1,
        )

    def rows(self, table: str) -> int:
        return {
            "user_id": self.user,
            "history": self.item,
            "user_attr": self.user_attr,
            "item_id": self.item,
            "category": self.category,
            "brand": self.brand,
            "token": self.token,
            "price": self.price,
            "popularity": POPULARITY_BUCKETS,
        }[table]


def _ebc(
    tables: dict[str, tuple[str, PoolingType]],
    sizes: TableSizes,
    dim: int,
    device: torch.device | None,
) -> EmbeddingBagCollection:
    configs = [
        EmbeddingBagConfig(
            name=name,
            embedding_dim=dim,
            num_embeddings=sizes.rows(name),
            feature_names=[feature],
            pooling=pooling,
        )
        for name, (feature, pooling) in tables.items()
    ]
    return EmbeddingBagCollection(tables=configs, device=device)


def _mlp(d_in: int, hidden: tuple[int, ...], d_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), nn.ReLU()]
        d_in = h
    layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


class TwoTower(nn.Module):
    """User and item towers; `forward` returns both normalised vectors, shape (B, dim) each.

    Embedding tables keep TorchRec's initialisation (uniform in ±1/sqrt(rows)), which sharded
    tables get too, so one process and N processes start from the same kind of weights.
    """

    def __init__(
        self, sizes: TableSizes, cfg: ModelConfig, device: torch.device | None = None
    ) -> None:
        super().__init__()
        self.sizes = sizes
        self.cfg = cfg
        self.user_ebc = _ebc(USER_TABLES, sizes, cfg.embedding_dim, device)
        self.item_ebc = _ebc(ITEM_TABLES, sizes, cfg.embedding_dim, device)
        self.user_mlp = _mlp(cfg.embedding_dim * len(USER_TABLES), cfg.hidden, cfg.dim)
        self.item_mlp = _mlp(cfg.embedding_dim * len(ITEM_TABLES), cfg.hidden, cfg.dim)
        if device is not None:
            self.user_mlp.to(device)
            self.item_mlp.to(device)

    def encode_users(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        """(B, dim) unit vectors for a user-side KJT (keys `USER_KEYS`)."""
        pooled = self.user_ebc(kjt)
        x = torch.cat([pooled[f] for f, _ in USER_TABLES.values()], dim=1)
        return F.normalize(self.user_mlp(x), dim=-1)

    def encode_items(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        """(B, dim) unit vectors for an item-side KJT (keys `ITEM_KEYS`)."""
        pooled = self.item_ebc(kjt)
        x = torch.cat([pooled[f] for f, _ in ITEM_TABLES.values()], dim=1)
        return F.normalize(self.item_mlp(x), dim=-1)

    def forward(
        self,
        user: KeyedJaggedTensor,
        item: KeyedJaggedTensor,
        negatives: KeyedJaggedTensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, dim) user and item vectors, and (M, dim) vectors of extra negative items."""
        neg = self.encode_items(negatives) if negatives is not None else None
        return self.encode_users(user), self.encode_items(item), neg


assert [f for f, _ in USER_TABLES.values()] == list(USER_KEYS)
assert [f for f, _ in ITEM_TABLES.values()] == list(ITEM_KEYS)
