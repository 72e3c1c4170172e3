"""FAISS indexes over item vectors: chosen by size and recall target, filtered at search."""

from engine.index.batch import search_all
from engine.index.config import IndexConfig
from engine.index.factory import build_index, choose_kind
from engine.index.item_index import ItemIndex, exact_top_k

__all__ = ["IndexConfig", "ItemIndex", "build_index", "choose_kind", "exact_top_k", "search_all"]
