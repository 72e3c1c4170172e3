"""Candidate generation: a union of sources, each tagged with its score and rank."""

from engine.candidates.config import CandidatesConfig
from engine.candidates.context import CandidateContext, ModelContext
from engine.candidates.recall import candidate_recall
from engine.candidates.union import (
    CandidateSource,
    candidate_chunks,
    default_sources,
    generate_candidates,
    merge,
)

__all__ = [
    "CandidateContext",
    "CandidateSource",
    "CandidatesConfig",
    "ModelContext",
    "candidate_chunks",
    "candidate_recall",
    "default_sources",
    "generate_candidates",
    "merge",
]
