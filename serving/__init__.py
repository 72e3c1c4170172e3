"""The online Python API: load a published artifact and answer top-k lookups."""

from serving.recommender import Recommender

__all__ = ["Recommender"]
