"""Attribute heads: a small classifier on face embeddings, trained on a user's own balanced data.

The shipped gender network was trained on data nobody here can inspect, and the
audit shows it is 10 points worse for some groups than others. A head is a
logistic regression (scikit-learn) on the engine's 128-D embeddings, trained on
a labelled set the user chooses and balanced across the groups they name, so
that no group dominates what it learns. faceaudit ships no trained head: heads
trained on research-only data (UTKFace, LFW) must not leave the machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "faceaudit-attribute-head/1"


def balanced_indices(groups: list[tuple], seed: int = 0) -> np.ndarray:
    """Indices keeping the same number of samples (the smallest group's size) from every group."""
    by_group: dict[tuple, list[int]] = {}
    for i, group in enumerate(groups):
        by_group.setdefault(group, []).append(i)
    size = min(len(members) for members in by_group.values())
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(members, size, replace=False) for _, members in sorted(by_group.items())]
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True)
class AttributeHead:
    label: str  # e.g. "gender"
    classes: tuple[str, ...]
    coef: np.ndarray  # (1, dim) for two classes, else (classes, dim)
    intercept: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def fit(cls, embeddings: np.ndarray, labels: list[str], *, label: str = "gender",
            balance_by: list[tuple] | None = None, regularization: float = 1.0, seed: int = 0,
            provenance: dict | None = None) -> AttributeHead:
        """Train on ``embeddings`` with ``labels``; ``balance_by`` (one group key per sample,
        e.g. (gender, race)) subsamples every group to the same size first."""
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(embeddings, dtype=np.float64)
        y = np.asarray(labels, dtype=object)
        keep = np.arange(len(y)) if balance_by is None else balanced_indices(balance_by, seed)
        model = LogisticRegression(C=regularization, max_iter=2000, random_state=seed)
        model.fit(x[keep], y[keep])
        record = {"n_train": len(keep), "n_offered": len(y), "balanced": balance_by is not None,
                  "regularization": regularization, "seed": seed, **(provenance or {})}
        return cls(label, tuple(str(c) for c in model.classes_), model.coef_.copy(), model.intercept_.copy(), record)

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, classes) class probabilities."""
        scores = np.atleast_2d(embeddings) @ self.coef.T + self.intercept
        if len(self.classes) == 2:
            p = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        scores = scores - scores.max(1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(1, keepdims=True)

    def predict(self, embeddings: np.ndarray) -> list[tuple[str, float]]:
        """(class, probability) per embedding."""
        p = self.probabilities(embeddings)
        return [(self.classes[i], float(row[i])) for row, i in zip(p, p.argmax(1))]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "label": self.label, "classes": list(self.classes),
                "coef": self.coef.tolist(), "intercept": self.intercept.tolist(), "provenance": self.provenance}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttributeHead:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        return cls(data["label"], tuple(data["classes"]), np.asarray(data["coef"]), np.asarray(data["intercept"]),
                   data.get("provenance", {}))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> AttributeHead:
        return cls.from_dict(json.loads(Path(path).read_text()))
