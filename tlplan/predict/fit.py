"""Fitted latency models: one per calibration op and pass, plus a per-step overhead.

Each (op, pass) model predicts the median ms of that pass from the configuration's analytic
features in two parts:

* a **base**: ``ms ≈ a + b·MACs + c·bytes`` with non-negative coefficients, fitted to relative
  error — the roofline-like trend, which extrapolates sensibly to sizes the sampling never
  reached;
* a **correction**: extremely randomised trees (scikit-learn's ``ExtraTreesRegressor``) on the
  ``log1p`` features, predicting ``log(ms / base)`` — what the kernels really do (tile sizes,
  cache effects, which algorithm the framework picks).

A fit is exported to plain arrays (tree nodes, thresholds, leaf values) and evaluated with numpy:
it can be cached as ``.npz`` and loaded with ``allow_pickle=False``. Nothing is ever unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..measure.microbench import Config
from .features import BYTES_PER_ELEMENT, bytes_in, feature_matrix, macs, weight_numel

#: bump when the features or the model change: cached fits of another version are not used
FIT_VERSION = 2

N_TREES = 60
MIN_SAMPLES_LEAF = 2


@dataclass(frozen=True)
class TreeEnsemble:
    """A forest as flat arrays: node ``i`` splits on ``feature[i] <= threshold[i]`` or is a leaf."""

    roots: np.ndarray  # (T,) int64: index of each tree's root
    left: np.ndarray  # (N,) int64; -1 at leaves
    right: np.ndarray  # (N,) int64
    feature: np.ndarray  # (N,) int64
    threshold: np.ndarray  # (N,) float64
    value: np.ndarray  # (N,) float64: the leaf's prediction

    @classmethod
    def from_sklearn(cls, forest) -> "TreeEnsemble":
        roots, left, right, feature, threshold, value = [], [], [], [], [], []
        offset = 0
        for est in forest.estimators_:
            t = est.tree_
            n = t.node_count
            roots.append(offset)
            leaf = t.children_left == -1
            left.append(np.where(leaf, -1, t.children_left + offset))
            right.append(np.where(leaf, -1, t.children_right + offset))
            feature.append(np.where(leaf, 0, t.feature))
            threshold.append(np.where(leaf, 0.0, t.threshold))
            value.append(t.value.reshape(n))
            offset += n
        cat = np.concatenate
        return cls(np.array(roots, dtype=np.int64), cat(left).astype(np.int64), cat(right).astype(np.int64),
                   cat(feature).astype(np.int64), cat(threshold).astype(np.float64), cat(value).astype(np.float64))

    def predict(self, X: np.ndarray) -> np.ndarray:
        if X.shape[0] == 0:
            return np.zeros(0)
        node = np.broadcast_to(self.roots, (X.shape[0], self.roots.shape[0])).copy()
        rows = np.arange(X.shape[0])[:, None]
        while True:
            inner = self.left[node] != -1
            if not inner.any():
                break
            go_left = X[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        return self.value[node].mean(axis=1)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": getattr(self, k) for k in ("roots", "left", "right", "feature", "threshold", "value")}

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray], prefix: str) -> "TreeEnsemble":
        return cls(*(np.asarray(data[f"{prefix}{k}"]) for k in ("roots", "left", "right", "feature", "threshold", "value")))


def base_terms(op: str, configs: Sequence[Config]) -> np.ndarray:
    """Columns of the base model: 1, MACs, bytes moved (in + out + weights)."""
    out = np.empty((len(configs), 3))
    for i, c in enumerate(configs):
        moved = bytes_in(op, c) + (c.numel_out + weight_numel(op, c)) * BYTES_PER_ELEMENT
        out[i] = (1.0, macs(op, c), moved)
    return out


def _fit_base(terms: np.ndarray, ms: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative error (each row divided by its own ms)."""
    from scipy.optimize import nnls

    scale = terms.max(axis=0)
    scale[scale == 0] = 1.0
    A = terms / scale / ms[:, None]
    coef, _ = nnls(A, np.ones_like(ms))
    coef = coef / scale
    if not np.any(coef > 0):
        coef[0] = float(np.median(ms))
    return coef


@dataclass(frozen=True)
class PassModel:
    op: str
    pass_: str
    base: np.ndarray  # (3,) coefficients of base_terms
    trees: TreeEnsemble  # predicts log(ms / base)
    rows: int  # measurements it was fitted on

    def predict(self, configs: Sequence[Config]) -> np.ndarray:
        if not configs:
            return np.zeros(0)
        base = np.maximum(base_terms(self.op, configs) @ self.base, 1e-6)
        return base * np.exp(self.trees.predict(feature_matrix(self.op, configs)))


def fit_pass_model(op: str, pass_: str, configs: Sequence[Config], ms: Sequence[float], *, seed: int = 0) -> PassModel:
    from sklearn.ensemble import ExtraTreesRegressor

    y = np.asarray(ms, dtype=np.float64)
    base = _fit_base(base_terms(op, configs), y)
    resid = np.log(y) - np.log(np.maximum(base_terms(op, configs) @ base, 1e-6))
    forest = ExtraTreesRegressor(n_estimators=N_TREES, min_samples_leaf=MIN_SAMPLES_LEAF, random_state=seed, n_jobs=1)
    forest.fit(feature_matrix(op, configs), resid)
    return PassModel(op, pass_, base, TreeEnsemble.from_sklearn(forest), len(y))

