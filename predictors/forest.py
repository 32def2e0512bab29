"""Random forests stored as plain arrays (no pickle) and evaluated with numpy.

nn-Meter's predictors were pickles and stopped loading with scikit-learn 1.3. Here a trained
``RandomForestRegressor`` is flattened into five arrays per forest (``left``, ``right``, ``feature``,
``threshold``, ``value``, with ``roots`` giving each tree's first node) saved in an ``.npz``. Loading needs
only numpy, and :meth:`ArrayForest.predict` walks all trees for all samples at once.

Exactness: scikit-learn compares ``float32(X) <= threshold`` (its trees cast inputs to float32) and
sums the trees' leaf values one tree after another in float64, then divides. We do the same, so predictions are identical to
``RandomForestRegressor.predict`` (checked in the tests), independent of the scikit-learn version.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMAT = "hil-forest/1"


@dataclass(frozen=True)
class ArrayForest:
    left: np.ndarray  # int32, -1 at leaves (global node index otherwise)
    right: np.ndarray
    feature: np.ndarray  # int32
    threshold: np.ndarray  # float64
    value: np.ndarray  # float64 leaf values (node value for inner nodes, unused)
    roots: np.ndarray  # int32, first node of each tree
    n_features: int
    max_depth: int

    @classmethod
    def from_sklearn(cls, model) -> "ArrayForest":
        trees = [est.tree_ for est in model.estimators_]
        offsets = np.cumsum([0] + [t.node_count for t in trees])
        lefts, rights = [], []
        for off, t in zip(offsets, trees):
            cl, cr = t.children_left.astype(np.int64), t.children_right.astype(np.int64)
            lefts.append(np.where(cl >= 0, cl + off, -1))
            rights.append(np.where(cr >= 0, cr + off, -1))
        return cls(
            left=np.concatenate(lefts).astype(np.int32), right=np.concatenate(rights).astype(np.int32),
            feature=np.concatenate([t.feature for t in trees]).astype(np.int32),
            threshold=np.concatenate([t.threshold for t in trees]).astype(np.float64),
            value=np.concatenate([t.value[:, 0, 0] for t in trees]).astype(np.float64),
            roots=offsets[:-1].astype(np.int32), n_features=int(model.n_features_in_),
            max_depth=int(max(t.max_depth for t in trees)),
        )

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": getattr(self, k) for k in ("left", "right", "feature", "threshold", "value", "roots")} | {
            f"{prefix}meta": np.array([self.n_features, self.max_depth], dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> "ArrayForest":
        meta = arrays[f"{prefix}meta"]
        return cls(**{k: np.asarray(arrays[f"{prefix}{k}"]) for k in ("left", "right", "feature", "threshold", "value",
                                                                      "roots")},
                   n_features=int(meta[0]), max_depth=int(meta[1]))

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Mean over trees of each sample's leaf value; X is (n_samples, n_features)."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X: shape {X.shape} is not allowed; allowed: (n, {self.n_features})")
        n = len(X)
        node = np.repeat(self.roots[None, :], n, axis=0)  # (n, trees)
        rows = np.arange(n)[:, None]
        for _ in range(self.max_depth):
            lft = self.left[node]
            inner = lft >= 0
            if not inner.any():
                break
            go_left = X[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(inner, np.where(go_left, lft, self.right[node]), node)
        leaf = self.value[node]
        out = np.zeros(n)
        for t in range(self.n_trees):  # scikit-learn's order: accumulate tree by tree, then divide
            out += leaf[:, t]
        return out / self.n_trees
