"""Task weights of multiple-gradient descent (MGDA).

Reference:
    Ozan Sener and Vladlen Koltun. "Multi-Task Learning as Multi-Objective Optimization." NeurIPS 2018.

MGDA steps along the min-norm point of the convex hull of the tasks' gradients on the shared
parameters: weights ``c >= 0`` with ``sum(c) = 1`` minimising ``|sum_k c_k g_k|^2``, i.e. the
quadratic ``c^T G c`` over the simplex, where ``G`` is the Gram matrix of the gradients.

It is solved exactly, for any number of tasks, by Wolfe's active-set method for the nearest point of
a polytope (P. Wolfe, "Finding the nearest point in a polytope", Math. Programming 11, 1976), which
needs only the inner products ``G``: it keeps a set of affinely independent gradients whose convex
hull holds the current point, replaces the point by the min-norm point of their affine hull (one
small linear solve) while that stays inside the simplex, and adds the gradient of least inner product
with the point until none is below it. It ends after finitely many steps at the optimum; the
Frank–Wolfe gap ``c^T G c - min_k (G c)_k`` is its certificate (the value is at most twice the gap
above the optimal one). Projected-gradient or Frank–Wolfe iterations only approach the point, slowly
when ``G`` is ill-conditioned.
"""

import numpy as np


def project_to_simplex(v):
    """The Euclidean projection of ``v`` onto ``{c >= 0, sum(c) = 1}``."""
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    rho = np.nonzero(u - cumulative / np.arange(1, len(v) + 1) > 0)[0][-1]
    return np.maximum(v - cumulative[rho] / (rho + 1), 0.0)


def affine_min_norm(gram):
    """Weights ``y`` (``sum(y) = 1``, any sign) of the min-norm point of the affine hull of the points
    whose Gram matrix is ``gram``: the solution of ``[[G, 1], [1^T, 0]] [y; mu] = [0; 1]``, nonsingular
    for affinely independent points (least squares guards the nearly dependent)."""
    k = len(gram)
    system = np.zeros((k + 1, k + 1))
    system[:k, :k], system[:k, k], system[k, :k] = gram, 1.0, 1.0
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    return np.linalg.lstsq(system, rhs, rcond=None)[0][:k]


def min_norm_weights(gram, tol=1e-15):
    """MGDA's task weights for the Gram matrix ``gram`` (``[K, K]``, ``gram[i, j] = g_i . g_j``): the
    point of the simplex minimising ``c^T gram c``: Wolfe's method runs until the Frank–Wolfe gap is
    below ``tol`` times the largest squared gradient norm, or rounding stops its descent."""
    gram = np.asarray(gram, dtype=np.float64)
    k = len(gram)
    scale = float(np.max(np.diag(gram))) if k else 0.0
    if k == 1 or not scale > 0:  # one task, or every gradient zero: each point is the min-norm point
        return np.full(k, 1.0 / max(k, 1))
    g = (gram + gram.T) / (2 * scale)  # unit scale: the tolerances below are relative
    start = int(np.argmin(np.diag(g)))
    support, weights = [start], np.ones(1)  # the corral and the current point's weights on it
    value = g[start, start]
    # each major cycle ends at a strictly lower value with a corral never seen before: finite in
    # exact arithmetic; the bound and the descent check stop rounding from cycling
    for _ in range(50 * k):
        products = g[:, support] @ weights  # (G c)_j: each gradient's inner product with the point
        best = int(np.argmin(products))
        if value - products[best] <= tol or best in support:
            break
        new_support, new_weights = _minor_cycle(g, support + [best], np.append(weights, 0.0))
        new_value = float(new_weights @ g[np.ix_(new_support, new_support)] @ new_weights)
        if not new_value < value:  # rounding: no further descent is possible
            break
        support, weights, value = new_support, new_weights, new_value
    c = np.zeros(k)
    c[support] = weights / weights.sum()
    return c


def _minor_cycle(g, support, weights):
    """Wolfe's minor cycle from the point ``weights`` on the corral ``support``: move towards the
    affine min-norm point of the corral as far as the weights stay >= 0, drop the gradients whose
    weights reach 0, and repeat until that point lies inside the corral's simplex."""
    while True:
        target = affine_min_norm(g[np.ix_(support, support)])
        if target.min() > 0:
            return support, target
        falling = target < weights
        ratios = np.full(len(weights), np.inf)
        ratios[falling] = weights[falling] / (weights[falling] - target[falling])
        blocking = int(np.argmin(ratios))
        step = min(ratios[blocking], 1.0)
        weights = weights + step * (target - weights)
        keep = weights > 1e-15
        if step < 1.0:
            keep[blocking] = False  # it reached 0 (rounding may leave a trace)
        if not keep.any():
            keep[int(np.argmax(weights))] = True
        support, weights = [s for s, kept in zip(support, keep) if kept], weights[keep]
        weights = weights / weights.sum()
