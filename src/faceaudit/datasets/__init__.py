"""Labelled face image sets (read-only; images stay where they are).

- labelled.py: the in-memory model every consumer shares (AuditImage, AuditPair,
  AuditDataset, DatasetProblems; gender vocabulary, age bands);
- readers.py: load_dataset and one reader per on-disk layout (faces-dev, csv,
  utkface, fairface, lfw), with the problems found on load;
- faces_dev.py: faces-dev's own files and its fixed calibration/check split.

Audits (faceaudit.audit) and training (faceaudit.fairness.train) both read
datasets through this package; it imports neither.
"""

from faceaudit.datasets.labelled import (
    AuditDataset,
    AuditImage,
    AuditPair,
    DatasetProblems,
)
from faceaudit.datasets.readers import describe_problems, load_dataset

__all__ = ["AuditDataset", "AuditImage", "AuditPair", "DatasetProblems", "describe_problems", "load_dataset"]
