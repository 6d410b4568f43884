"""Shared exact oracles for the SMC tests (imported by file name: pytest rootdir mode)."""

import math


def kalman_1d(ys, a=0.9, q=1.0, r=1.0, p0=1.0):
    """Exact log p(y_{0:T-1}) of x_0 ~ N(0, p0), x_t = a x_{t-1} + N(0, q), y_t = x_t + N(0, r)."""
    m, P, ll = 0.0, p0, 0.0
    for t, y in enumerate(ys.tolist()):
        if t > 0:
            m, P = a * m, a * a * P + q
        S = P + r
        ll += -0.5 * (math.log(2 * math.pi * S) + (y - m) ** 2 / S)
        m, P = m + P / S * (y - m), P - P * P / S
    return ll
