"""The two-tower model: tower shapes and norms, the sampled softmax against a direct
computation, id dropout, training that lowers the loss and is deterministic, checkpoints and
vector export that round-trip, the serving-time user encoder, and cold-start quality."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from embeddings.checkpoint import load_checkpoint, load_state_dict, save_checkpoint
from embeddings.config import EmbeddingsConfig, ModelConfig, TrainConfig
from embeddings.encode import item_vectors, user_vectors
from embeddings.export import export_vectors, load_vectors
from embeddings.id_dropout import drop_ids, mask_ids
from embeddings.loss import sampled_softmax_loss
from embeddings.model import TableSizes, TwoTower
from embeddings.retrieval_eval import (
    held_out,
    hide_items,
    random_scores,
    recall_at_k,
    vector_scores,
)
from embeddings.train import TrainResult, train_two_tower
from embeddings.user_encoder import UserEncoder
from pipelines.batches import ItemTable, UserTable, training_examples
from pipelines.config import PipelineConfig, load_config
from pipelines.dataset import FeatureSet, build_features
from pipelines.synthetic import GeneratorSpec, generate

SMALL_MODEL = ModelConfig(dim=16, embedding_dim=16, hidden=(32,), id_dropout=0.25)


def small_cfg(base: PipelineConfig, **train: object) -> EmbeddingsConfig:
    settings = {"epochs": 4, "batch_size": 256, "patience": 4, "seed": 5, **train}
    return EmbeddingsConfig(
        **base.model_dump(exclude={"model", "train"}),
        model=SMALL_MODEL,
        train=TrainConfig(**settings),
    )


@pytest.fixture(scope="module")
def trained(small_config: PipelineConfig, small_features: FeatureSet) -> TrainResult:
    return train_two_tower(
        small_features, small_cfg(small_config), validation=held_out(small_features)
    )


@pytest.fixture(scope="module")
def model(trained: TrainResult) -> TwoTower:
    m = TwoTower(trained.sizes, SMALL_MODEL)
    m.load_state_dict(trained.state_dict)
    return m.eval()


def sizes_of(fs: FeatureSet) -> TableSizes:
    return TableSizes.from_vocabs(fs.vocabs, price_buckets=10)


def test_towers_give_unit_vectors_of_the_configured_dimension(small_features: FeatureSet) -> None:
    torch.manual_seed(0)
    m = TwoTower(sizes_of(small_features), SMALL_MODEL)
    ex = training_examples(small_features, history_length=20)
    b = next(ex.batches(64))
    u, v, neg = m(b.user, b.item)
    assert u.shape == (64, 16) and v.shape == (64, 16) and neg is None
    torch.testing.assert_close(u.norm(dim=1), torch.ones(64))
    torch.testing.assert_close(v.norm(dim=1), torch.ones(64))
    _, _, neg = m(b.user, b.item, ex.items.kjt(np.array([1, 2, 3])))
    assert neg is not None and neg.shape == (3, 16)


def reference_loss(u, v, idx, logq, t, w, nv=None, nidx=None, n_items=None) -> float:
    """Direct computation: softmax over the batch's distinct other items and the extra
    negatives, each logit corrected by log of its expected count among the candidates."""
    b = len(idx)
    total = 0.0
    for i in range(b):
        logits, pos = [], None
        for j in range(b):
            if j != i and idx[j] == idx[i]:
                continue
            if j == i:
                pos = len(logits)
            logits.append(float(u[i] @ v[j]) / t - (float(logq[j]) + math.log(b)))
        if nv is not None:
            for m in range(len(nidx)):
                if nidx[m] != idx[i]:
                    logits.append(float(u[i] @ nv[m]) / t - math.log(len(nidx) / n_items))
        logits = np.array(logits)
        lse = logits.max() + math.log(np.exp(logits - logits.max()).sum())
        total += float(w[i]) * (lse - logits[pos])
    return total / float(w.sum())


def test_sampled_softmax_matches_a_direct_computation() -> None:
    g = torch.Generator().manual_seed(1)
    u = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=1)
    v = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=1)
    nv = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1)
    idx = torch.tensor([3, 5, 3, 7, 9, 1])  # item 3 twice: not a negative of itself
    nidx = torch.tensor([5, 11, 12, 13])  # 5 is example 1's own item: masked for it
    logq = torch.log(torch.tensor([0.2, 0.1, 0.2, 0.05, 0.05, 0.01]))
    w = torch.tensor([1.0, 2.0, 1.0, 4.0, 1.0, 1.0])
    got = sampled_softmax_loss(u, v, idx, logq, temperature=0.1, weight=w)
    torch.testing.assert_close(
        got.double(),
        torch.tensor(reference_loss(u, v, idx, logq, 0.1, w), dtype=torch.float64),
        rtol=1e-5,
        atol=1e-5,
    )
    got = sampled_softmax_loss(
        u, v, idx, logq, temperature=0.1, weight=w, neg_item=nv, neg_idx=nidx, n_items=20
    )
    want = reference_loss(u, v, idx, logq, 0.1, w, nv, nidx, 20)
    torch.testing.assert_close(
        got.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-5, atol=1e-5
    )


def test_id_dropout_touches_only_the_id_key(small_features: FeatureSet) -> None:
    ex = training_examples(small_features, history_length=20)
    kjt = next(ex.batches(32)).user
    g = torch.Generator().manual_seed(0)
    assert drop_ids(kjt, 0.0, g) is kjt
    dropped = drop_ids(kjt, 0.999999, g).to_dict()
    original = kjt.to_dict()
    assert (dropped["user_id"].values() == 0).all()
    for key in ("user_history", "user_attrs"):
        assert torch.equal(dropped[key].values(), original[key].values())
        assert torch.equal(dropped[key].lengths(), original[key].lengths())
    half = mask_ids(kjt, torch.arange(32) % 2 == 0).to_dict()["user_id"].values()
    assert (half[0::2] == 0).all() and torch.equal(half[1::2], original["user_id"].values()[1::2])


def test_training_lowers_the_loss_and_keeps_the_best_epoch(trained: TrainResult) -> None:
    losses = [e.loss for e in trained.epochs]
    assert losses[-1] < losses[0] * 0.95, losses
    recalls = [e.recall for e in trained.epochs]
    assert trained.best_recall == max(recalls)
    assert list(trained.tables_per_rank) == [0]  # one process holds every table
    assert set(trained.tables_per_rank[0]) == {
        "user_id",
        "history",
        "user_attr",
        "item_id",
        "category",
        "brand",
        "token",
        "price",
        "popularity",
    }


def test_training_is_deterministic_given_the_seed(
    small_config: PipelineConfig, small_features: FeatureSet
) -> None:
    cfg = small_cfg(small_config, epochs=1)
    a = train_two_tower(small_features, cfg)
    b = train_two_tower(small_features, cfg)
    assert a.state_dict.keys() == b.state_dict.keys()
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k]), k


def test_checkpoint_and_export_round_trip(
    tmp_path: Path, trained: TrainResult, model: TwoTower, small_features: FeatureSet
) -> None:
    save_checkpoint(tmp_path, trained.state_dict, trained.sizes, SMALL_MODEL)
    loaded = load_checkpoint(tmp_path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    items, users = export_vectors(
        loaded,
        small_features,
        known_items=trained.known_items,
        known_users=trained.known_users,
        history_length=50,
        folder=tmp_path,
    )
    back_items, back_users = (
        load_vectors(tmp_path / "items.parquet"),
        load_vectors(tmp_path / "users.parquet"),
    )
    assert back_items.ids.to_list() == small_features.items["item_id"].to_list()
    assert back_users.ids.to_list() == small_features.users["user_id"].to_list()
    np.testing.assert_array_equal(back_items.matrix, items.matrix)
    np.testing.assert_array_equal(back_users.matrix, users.matrix)
    np.testing.assert_allclose(np.linalg.norm(back_items.matrix, axis=1), 1.0, rtol=1e-5)
    # Items without training examples are exactly their content-only vectors.
    cold = back_items.content_only
    assert cold.any() and (~cold).any()
    np.testing.assert_array_equal(cold, ~trained.known_items[back_items.index])
    table = ItemTable.from_features(small_features)
    content = item_vectors(
        loaded,
        table,
        np.zeros(trained.sizes.item, bool),
        batch_size=512,
        device=torch.device("cpu"),
    ).numpy()
    np.testing.assert_allclose(back_items.matrix[cold], content[back_items.index[cold]], atol=1e-6)
    assert not np.allclose(back_items.matrix[~cold], content[back_items.index[~cold]], atol=1e-3)


def test_user_encoder_matches_the_user_tower_without_torchrec(
    tmp_path: Path, trained: TrainResult, model: TwoTower, small_features: FeatureSet
) -> None:
    save_checkpoint(tmp_path, trained.state_dict, trained.sizes, SMALL_MODEL)
    enc = UserEncoder.from_state_dict(load_state_dict(tmp_path))
    table = UserTable.from_features(small_features, history_length=50)
    users = np.array([1, 2, 3, 50, 120])
    histories = [
        table.history.values[table.history.offsets[u] : table.history.offsets[u + 1]].tolist()
        for u in users
    ]
    attrs = [
        table.attrs.values[table.attrs.offsets[u] : table.attrs.offsets[u + 1]].tolist()
        for u in users
    ]
    want = model.encode_users(table.kjt(users)).detach().numpy()
    np.testing.assert_allclose(enc.encode(histories, attrs, users.tolist()), want, atol=1e-5)
    # A brand-new user: no id, a short history, one attribute; and one with nothing at all.
    new = enc.encode([[1, 2], []], [[1], []])
    assert new.shape == (2, enc.dim)
    np.testing.assert_allclose(np.linalg.norm(new, axis=1), 1.0, rtol=1e-5)


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> tuple[PipelineConfig, FeatureSet]:
    """Enough items per category for content to carry signal (the small set has ~1.5)."""
    out = tmp_path_factory.mktemp("medium")
    generate(GeneratorSpec(users=1500, items=800, interactions=60_000, days=60, seed=4), out)
    cfg = load_config(out / "config.toml")
    return cfg, build_features(cfg)


def test_content_only_vectors_rank_new_items_better_than_chance(
    medium: tuple[PipelineConfig, FeatureSet],
) -> None:
    """Products that never appear in training, ranked by their content-only vectors for the
    users who went on to interact with them, against a random ranking of the same items."""
    base, features = medium
    products = features.items.filter(pl.col("kind") == "product")["item_idx"].to_numpy()
    gone = np.random.default_rng(0).choice(products, len(products) // 10, replace=False)
    fs = hide_items(features, gone)
    result = train_two_tower(fs, small_cfg(base, epochs=3))
    assert not result.known_items[gone].any()
    model = TwoTower(result.sizes, SMALL_MODEL)
    model.load_state_dict(result.state_dict)
    model.eval()
    corpus = np.zeros(result.sizes.item, bool)
    corpus[gone] = True
    cold = held_out(fs).restrict(corpus)
    assert len(cold) >= 30
    cpu = torch.device("cpu")
    iv = item_vectors(
        model, ItemTable.from_features(fs), result.known_items, batch_size=512, device=cpu
    )
    uv = user_vectors(
        model,
        UserTable.from_features(fs, history_length=50),
        cold.users,
        result.known_users,
        batch_size=512,
        device=cpu,
    )
    k = 10
    model_recall = recall_at_k(vector_scores(uv, iv), cold, k)
    chance = np.mean([recall_at_k(random_scores(len(corpus), seed=s), cold, k) for s in range(20)])
    assert model_recall > 2 * chance, (model_recall, chance)
