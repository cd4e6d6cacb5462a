"""Task weights of multiple-gradient descent (MGDA).

Reference:
    Ozan Sener and Vladlen Koltun. "Multi-Task Learning as Multi-Objective Optimization." NeurIPS 2018.

MGDA steps along the min-norm point of the convex hull of the tasks' gradients on the shared
parameters: weights ``c >= 0`` with ``sum(c) = 1`` minimising ``|sum_k c_k g_k|^2``, i.e. the
quadratic ``c^T G c`` over the simplex, where ``G`` is the Gram matrix of the gradients. Two tasks have
a closed form; more are solved from the best pair by projected gradient descent on the simplex with
exact line search.
"""

import numpy as np


def pair_weight(v11, v12, v22):
    """``(gamma, cost)`` minimising ``|gamma x1 + (1 - gamma) x2|^2`` over ``gamma`` in [0, 1], from
    ``v11 = x1.x1``, ``v12 = x1.x2``, ``v22 = x2.x2``."""
    curvature = v11 + v22 - 2 * v12
    gamma = 0.5 if curvature <= 0 else float(np.clip((v22 - v12) / curvature, 0.0, 1.0))
    return gamma, gamma * gamma * v11 + 2 * gamma * (1 - gamma) * v12 + (1 - gamma) ** 2 * v22


def project_to_simplex(v):
    """The Euclidean projection of ``v`` onto ``{c >= 0, sum(c) = 1}``."""
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    rho = np.nonzero(u - cumulative / np.arange(1, len(v) + 1) > 0)[0][-1]
    return np.maximum(v - cumulative[rho] / (rho + 1), 0.0)


def min_norm_weights(gram, max_iter=250, tol=1e-9):
    """MGDA's task weights for the Gram matrix ``gram`` (``[K, K]``, ``gram[i, j] = g_i . g_j``)."""
    gram = np.asarray(gram, dtype=np.float64)
    k = len(gram)
    if k == 1:
        return np.ones(1)
    best = None
    for i in range(k):
        for j in range(i + 1, k):
            gamma, cost = pair_weight(gram[i, i], gram[i, j], gram[j, j])
            if best is None or cost < best[0]:
                best = (cost, i, j, gamma)
    _, i, j, gamma = best
    c = np.zeros(k)
    c[i], c[j] = gamma, 1.0 - gamma
    if k == 2:
        return c
    lipschitz = max(np.linalg.eigvalsh(gram)[-1], 1e-12)
    for _ in range(max_iter):
        direction = project_to_simplex(c - gram @ c / lipschitz) - c
        curvature = direction @ gram @ direction
        if curvature <= 1e-18:
            break
        step = float(np.clip(-(c @ gram @ direction) / curvature, 0.0, 1.0))
        c = c + step * direction
        if np.abs(step * direction).sum() < tol:
            break
    return c
