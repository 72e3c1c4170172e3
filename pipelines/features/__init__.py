"""Feature builders: plain typed functions from LazyFrame to LazyFrame, chained with `.pipe`."""

from pipelines.features.content import category_prefixes, item_content, price_edges, text_tokens
from pipelines.features.history import positives, user_history
from pipelines.features.popularity import item_popularity, user_category_affinity
from pipelines.features.users import user_attribute_tokens

__all__ = [
    "category_prefixes",
    "item_content",
    "item_popularity",
    "positives",
    "price_edges",
    "text_tokens",
    "user_attribute_tokens",
    "user_category_affinity",
    "user_history",
]
