"""Retrieval, re-ranking, ads, business rules, jobs, evaluation and the CLI."""
