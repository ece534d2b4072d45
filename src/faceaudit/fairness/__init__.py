"""Mitigations of demographic gaps, measured with the same audit that finds them."""

from faceaudit.fairness.score_normalization import FairScoreNormalization

__all__ = ["FairScoreNormalization"]
