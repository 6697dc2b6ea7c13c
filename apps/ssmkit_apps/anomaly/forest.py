"""IsolationForest on windows, fitted by scikit-learn and kept as plain tensors.

scikit-learn models only serialise through pickle, which ssmkit never loads. The fitted trees
are therefore copied into padded buffers ([n_trees, n_nodes]: feature, threshold, children,
leaf path length) that safetensors stores; scoring walks those buffers and reproduces
``IsolationForest.score_samples`` exactly (tested).
"""

from __future__ import annotations

import numpy as np
import torch

from ssmkit.registry import register_model
from ssmkit_apps.anomaly.model import DetectorBase

_EULER_GAMMA = 0.5772156649015329


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): mean depth of an unsuccessful search in a binary search tree of n points."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + _EULER_GAMMA) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@register_model("isolation_forest")
class WindowIsolationForest(DetectorBase):
    """IsolationForest over flattened windows [B, L, C] -> one score per window, repeated over
    its L steps ([B, L]); higher = more anomalous.

    Args:
        n_channels: C. window: L (keep it short: the forest sees L * C features).
        n_estimators, max_samples, seed: passed to ``sklearn.ensemble.IsolationForest``.
    """

    score_kind = "isolation"
    trainable = False

    def __init__(
        self, n_channels: int = 8, window: int = 16, n_estimators: int = 100, max_samples: int = 256, seed: int = 0
    ) -> None:
        super().__init__(n_channels, window)
        self.n_estimators, self.max_samples, self.seed = n_estimators, max_samples, seed
        # Fixed shapes, so a checkpoint loads into a freshly built model: a tree grown on at
        # most max_samples points has at most 2 * max_samples - 1 nodes.
        shape = (n_estimators, 2 * max_samples - 1)
        self.register_buffer("feature", torch.zeros(shape, dtype=torch.int64))
        self.register_buffer("left", torch.full(shape, -1, dtype=torch.int64))
        self.register_buffer("right", torch.full(shape, -1, dtype=torch.int64))
        self.register_buffer("split", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("leaf_depth", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("norm_depth", torch.tensor(0.0, dtype=torch.float64))
        # A parameter so the engine's optimiser has something to hold; the forest is not trained
        # by gradients.
        self.unused = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    @property
    def fitted(self) -> bool:
        return bool(self.norm_depth > 0)

    def fit_series(self, series: np.ndarray, stride: int = 1) -> WindowIsolationForest:
        """Fit on every ``stride``-th window of a standardised training series [T, C]."""
        T = len(series)
        starts = list(range(0, T - self.window + 1, stride))
        return self.fit(np.stack([series[s : s + self.window] for s in starts]))

    def fit(self, windows: np.ndarray) -> WindowIsolationForest:
        """windows: standardised [N, L, C]."""
        from sklearn.ensemble import IsolationForest

        flat = np.asarray(windows, dtype=np.float32).reshape(len(windows), -1)
        forest = IsolationForest(
            n_estimators=self.n_estimators, max_samples=min(self.max_samples, len(flat)), random_state=self.seed
        ).fit(flat)
        self.load_sklearn(forest)
        return self

    def load_sklearn(self, forest) -> None:
        trees = [est.tree_ for est in forest.estimators_]
        T, n_nodes = self.feature.shape
        if len(trees) != T or max(t.node_count for t in trees) > n_nodes:
            raise ValueError(
                f"forest has {len(trees)} trees of up to {max(t.node_count for t in trees)} nodes; "
                f"this model holds {T} trees of up to {n_nodes}"
            )
        feat = np.zeros((T, n_nodes), dtype=np.int64)
        left = np.full((T, n_nodes), -1, dtype=np.int64)
        right = np.full((T, n_nodes), -1, dtype=np.int64)
        split = np.zeros((T, n_nodes), dtype=np.float64)
        leaf = np.zeros((T, n_nodes), dtype=np.float64)
        for i, (t, cols) in enumerate(zip(trees, forest.estimators_features_)):
            n = t.node_count
            is_leaf = t.children_left[:n] == -1
            # Trees may be fitted on a column subset: map their feature ids back to window columns.
            feat[i, :n] = np.where(is_leaf, 0, np.asarray(cols)[np.maximum(t.feature[:n], 0)])
            left[i, :n], right[i, :n] = t.children_left[:n], t.children_right[:n]
            split[i, :n] = t.threshold[:n]
            depth = np.zeros(n, dtype=np.float64)
            for node in range(n):  # parents precede children in sklearn's node order
                if not is_leaf[node]:
                    depth[t.children_left[node]] = depth[node] + 1
                    depth[t.children_right[node]] = depth[node] + 1
            leaf[i, :n] = depth + average_path_length(t.n_node_samples[:n])
        for name, arr in (("feature", feat), ("left", left), ("right", right), ("split", split), ("leaf_depth", leaf)):
            getattr(self, name).copy_(torch.from_numpy(arr))
        self.norm_depth.fill_(float(average_path_length(np.array([forest.max_samples_]))[0]))

    def score_flat(self, flat: torch.Tensor) -> torch.Tensor:
        """[N, F] -> [N] in (0, 1]: 2 ** (-mean path length / c(max_samples))."""
        if not self.fitted:
            raise ValueError(
                "the isolation forest is not fitted; train it first (ssmkit anomaly train --config isolation_forest)"
            )
        # sklearn compares float32 inputs against float64 thresholds; match that cast exactly.
        x = flat.to(torch.float32).to(torch.float64)
        T, N = self.feature.shape[0], x.shape[0]
        node = torch.zeros(T, N, dtype=torch.int64, device=x.device)
        rows = torch.arange(T, device=x.device)[:, None]
        for _ in range(self.feature.shape[1]):
            l = self.left[rows, node]
            active = l >= 0
            if not active.any():
                break
            f = self.feature[rows, node]
            go_left = x.T.gather(0, f) <= self.split[rows, node]
            node = torch.where(active, torch.where(go_left, l, self.right[rows, node]), node)
        depth = self.leaf_depth[rows, node].mean(0)
        return torch.pow(2.0, -depth / self.norm_depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised windows [B, L, C] -> [B, L] (the window's score at every step)."""
        self.check_input(x)
        s = self.score_flat(x.reshape(x.shape[0], -1)).to(torch.float32)
        return s[:, None].expand(-1, x.shape[1])
