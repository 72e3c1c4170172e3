"""The request path of a known user over per-version arrays (`tables`): candidates, the
re-ranker's features, scores and rules without a query plan per request. The frame path in
`engine.candidates` and `engine.rerank.features` builds the same values for the batch and
for training, and stays the reference the array path is tested against."""

from engine.request.lists import ListedItem
from engine.request.tables import RequestTables

__all__ = ["ListedItem", "RequestTables"]
