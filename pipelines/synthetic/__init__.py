"""A generator of realistic synthetic data in recengine's data contract, with its ground truth.

Preferences come from a hidden latent model (see `world`): user and item factors shaped by
attributes, a category tree and brands, power-law popularity, drift over time, and items and
users that appear late. `events` samples the behaviour (sessions of views with a purchase funnel,
logged product impressions with clicks) and `ads` the logged ad impressions with their logging
propensities. `generate` writes the three tables and the ground truth that defines the oracle.

Users are weekly (active all along their tenure) or, with `activity = "bursty"`, active in 1-3
bursts of a day or two spread over the span while products form chains (series, complements)
whose successors users pick next; the oracle then depends on the user's last view
(`GroundTruth.utility(..., last_items=...)`).
"""

from pipelines.synthetic.generate import GeneratorSpec, generate
from pipelines.synthetic.truth import GroundTruth

__all__ = ["GeneratorSpec", "GroundTruth", "generate"]
