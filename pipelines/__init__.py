"""Polars feature pipelines: validate, encode, split, build features, make batches.

The bottom layer of recengine. It knows tables and ids, never models: everything above it
(embeddings, engine, serving) consumes what it produces.
"""
